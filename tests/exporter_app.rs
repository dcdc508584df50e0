//! GitHub App auth against the fake API: RS256 JWT exchanged for an installation token, refreshed before expiry.
mod fake_github;

use std::time::Duration;

use arc_hook::exporter::collect::{RepoFilter, Scope};
use arc_hook::exporter::github::{ClientOptions, Credentials};
use arc_hook::exporter::metrics::Buckets;
use arc_hook::exporter::{Config, Exporter};
use chrono::Utc;
use fake_github::{FakeGitHub, job, run};

/// A throwaway 2048-bit key generated for this test only (PKCS#1, the format GitHub hands out).
const TEST_APP_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAmK+wkbUQmxDj0qhH3E0pFGidfWYr4QKp/tD1i7XiCsXgx8ef
TvYtqj8xnLuC67Y89LyWP3dgRVzXYAcCcp0gPFRuriuTWBRd96hYzeCqHHpD+Ps7
r4X2TTdWgZxEnrLwzeLDRFlBYzx4WC92O37d3wUKemq3U7/KUibFBzFabvUEmv9Q
kN7m6LJqrZ5tGRLI5uUdT1MvKj5l93tQ5UvvQfuTRJOcobya5/BTXVBkw6ckloVW
R7qL8jltKnS8gzB5YxdSZyuhXq8Hl+f17zoj2VZK6zWcACU+ZqPj0OKe8NoqNktX
qbqRLiyFrhWcSKM1dueCEg5nW2Tu9VAe3e1x9wIDAQABAoIBAELfsFYhF8TTAPWi
/tZedT+bEl96AH3szMfufZ1TbE2LnYfixsOuzxFh3DjpZ84VY11NvADQKDo5D5vf
dhL8/sFtuYxPSZmqUf3Gnh6N5/PRGTRT1TBrXBU1x429A9D+TrneN+gXr6vnME5v
ezlTt5mWe6BiXSkxN0wD7wfXdeRifps/cdn7C2wqjz+fxrWgEfK4wgbcFbMyhdjs
C/6AWY/cWKZ2ebP411QBaCdjqhzNT9XH4xTWrUDJw+6jEkVzNXBO0WGrg6+Kh97t
aoWkhGvM4MnmaanbwS8Bb4fEvEl2i6S9fF75ln5A+8iuVkzizfZLAL+AU8B8lC/b
PibV8wECgYEA1LxZdad4YZ4tjckwHpD9z2Ce25XtEtQFEZTVnHAWxd5zo1el9OqC
CBPnxf+FsIQBK+iVWV+3+OfLygrfFzVmutZpnKG5iZCaJaktfjnn6mCh9YIBJxIg
9kkVKPR+zawFvbnLxOxUcI+EU0IWSWZBfK6sUepyhrr2WdWrZ6v9pbMCgYEAt7z9
EcQvGw8++1a9lx3ar7mM2Y7kSUsFKgtxJfOHJBtqdy2UChWHh5VPpmcavoTKY6ze
pHZ6bASD2yDy9ke+8eOvsVfhoo0rgWJowpju0SgRi7fo8BNa8YtpWyvVp3l1xQBF
DqIXKq5uB4a7+r1XflZryQh9vTr4h5leqzCdqK0CgYAW/QuFxUUi917g1X7Xrr9e
q4g/HmJyCGtLzROQRiSP2UwRuKT8ZGMM0GnZYZVmz7z4q7eH4uoUgafp+2bEMUca
pZTgEjHkhbXCoBeEbml7UFnwF85cFH9vXdJljJYvT4mHSQ6WBxvQ1hFsldWmtOAa
wx1n9LfPi2CXsJlHKLTONQKBgQCOKfhViso30bAVoKPJDRxr4tGMc/dGjnlMctX1
W1wxH9VcqTNmKgpXabvbMOOMjgpa3SLXdaR7d3LeVbwnupOPbXA/c5PtxfTng1Ez
YElIJAyPYpklSJSRWCEInf4OOvhYmUDVda0fJR+VSzafZ2kPI6b6QUuo4rvxj0Wk
h1U1cQKBgDVMakIEL/4N7kvyf1RUPnZka4c8CKwLiRAWjyJb2c15RV7EzTeOBnvt
UjfwqeHRVy1hswYBri2l7EhIb2WiYWrv7FL5qASwgxMjzIc0U5hGQV3PVr3mEMRV
z7wh4pKDrudTGEcrEHFIVTPtB8zycPXHIFK01GmTbbCDzgs9oACk
-----END RSA PRIVATE KEY-----
";

fn config(fake: &FakeGitHub, credentials: Credentials) -> Config {
    Config {
        api_url: fake.url(),
        scope: Scope::Repos(vec!["acme/web".into()]),
        credentials,
        window: Duration::from_secs(24 * 3600),
        branch_allow_list: Vec::new(),
        runner_label_allow_list: Vec::new(),
        runner_group_allow_list: Vec::new(),
        repo_filter: RepoFilter::default(),
        buckets: Buckets::default(),
        state_file: None,
        webhook_secret: None,
        client: ClientOptions {
            rate_limit_reserve: 0,
            ..ClientOptions::default()
        },
        concurrency: 1,
        rerun_lookback: Duration::from_secs(3600),
    }
}

async fn fake_with_app() -> (FakeGitHub, Credentials) {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    let now = Utc::now() - chrono::Duration::minutes(30);
    fake.put_attempt(
        "acme/web",
        run(
            1,
            1,
            "CI",
            "main",
            "push",
            Some("success"),
            now,
            now,
            now + chrono::Duration::minutes(5),
        ),
        vec![job(
            11,
            1,
            1,
            &["gpu"],
            now,
            Some(now + chrono::Duration::seconds(20)),
            "success",
        )],
    );
    let creds =
        Credentials::app_from_pem("4242".into(), 77, TEST_APP_KEY).expect("test key parses");
    let Credentials::App { key, .. } = &creds else {
        unreachable!("app_from_pem returns App")
    };
    let public = key.public().as_ref().to_vec();
    // The fake accepts only installation tokens it issued, and only for JWTs signed by this key.
    fake.with(|s| {
        s.app = Some(("4242".into(), 77, public));
        s.accepted_tokens = vec!["nothing-else".into()];
    });
    (fake, creds)
}

#[tokio::test]
async fn app_jwt_is_exchanged_for_an_installation_token_and_reused() {
    let (fake, creds) = fake_with_app().await;
    let exporter = Exporter::new(config(&fake, creds)).expect("exporter builds");
    let report = exporter.poll_once().await.expect("poll");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.runs_counted, 1);
    exporter.poll_once().await.expect("second poll");
    let reqs = fake.requests();
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].target, "/app/installations/77/access_tokens");
    assert_eq!(reqs[0].status, 201);
    assert_eq!(
        fake.with(|s| s.issued_tokens),
        1,
        "a token valid for an hour is reused"
    );
    assert!(
        reqs.iter()
            .filter(|r| r.method == "GET")
            .all(|r| r.authorization.as_deref() == Some("Bearer ghs_fake1"))
    );
}

#[tokio::test]
async fn installation_token_is_refreshed_before_it_expires() {
    let (fake, creds) = fake_with_app().await;
    // Tokens that expire within the 5-minute margin are replaced before the next request.
    fake.with(|s| s.token_lifetime = chrono::Duration::minutes(4));
    let exporter = Exporter::new(config(&fake, creds)).expect("exporter builds");
    exporter.poll_once().await.expect("poll");
    let issued_after_first = fake.with(|s| s.issued_tokens);
    exporter.poll_once().await.expect("second poll");
    assert!(fake.with(|s| s.issued_tokens) > issued_after_first);
    assert!(
        fake.requests().iter().all(|r| r.status != 401),
        "no request went out with an expired or missing token"
    );
}

#[tokio::test]
async fn a_jwt_signed_by_another_key_is_refused() {
    let (fake, creds) = fake_with_app().await;
    fake.with(|s| s.app.as_mut().map(|a| a.2[20] ^= 0xff));
    let exporter = Exporter::new(config(&fake, creds)).expect("exporter builds");
    let report = exporter.poll_once().await.expect("poll cycle runs");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].contains("401"), "{}", report.errors[0]);
}
