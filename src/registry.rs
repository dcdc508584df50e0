//! The one registry API request that tells whether an image tag is already pushed (`HEAD /v2/<name>/manifests/<tag>`), with the token and basic authentication registries ask for.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, USER_AGENT, WWW_AUTHENTICATE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// How long the whole check (manifest request, token request, retry) may take.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// The manifest media types a pushed image may have: OCI index and manifest, Docker manifest list and v2.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// Largest token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Docker Hub: where `docker.io/...` references are served, and its key in docker configs.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// Why the registry could not say whether a tag exists.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryError {
    #[error("{0:?} is not an image reference of the form host/repository:tag")]
    Reference(String),
    #[error("the push secret's .dockerconfigjson is not a docker config: {0}")]
    DockerConfig(String),
    #[error("no CA certificates to verify the registry with")]
    Tls(#[source] std::io::Error),
    #[error("{0:?} is not a usable URL")]
    Url(String),
    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("reading the answer of {url} failed: {reason}")]
    Body { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} asks for credentials and the push secret has none for {host}")]
    NoCredentials { url: String, host: String },
    #[error(
        "{url} answered 401 with an authentication challenge arc-hook cannot follow: {challenge:?}"
    )]
    Challenge { url: String, challenge: String },
    #[error("the token service {url} gave no token")]
    Token { url: String },
    #[error("the registry gave no answer within {} s", .0.as_secs())]
    Timeout(Duration),
}

/// An image reference split the way the registry API needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// The host (and port) requests go to (`registry-1.docker.io` for Docker Hub).
    pub api_host: String,
    /// The host as docker configs name it (`https://index.docker.io/v1/` for Docker Hub).
    pub config_host: String,
    /// The repository (`project/name`; `library/name` for Docker Hub's official images).
    pub repository: String,
    pub tag: String,
}

impl ImageRef {
    /// Splits `host[:port]/repository:tag` (no host: Docker Hub, as `docker push` reads it).
    pub(crate) fn parse(reference: &str) -> Result<ImageRef, RegistryError> {
        let bad = || RegistryError::Reference(reference.to_string());
        let (name, tag) = reference.rsplit_once(':').ok_or_else(bad)?;
        if tag.is_empty() || tag.contains('/') || name.contains('@') || name.is_empty() {
            return Err(bad());
        }
        let (first, rest) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first), rest)
            }
            _ => (None, name),
        };
        if rest.is_empty() {
            return Err(bad());
        }
        Ok(match first {
            Some(host) if host != "docker.io" && host != "index.docker.io" => ImageRef {
                api_host: host.to_string(),
                config_host: host.to_string(),
                repository: rest.to_string(),
                tag: tag.to_string(),
            },
            _ => ImageRef {
                api_host: DOCKER_HUB_API.into(),
                config_host: DOCKER_HUB_CONFIG_KEY.into(),
                repository: if rest.contains('/') {
                    rest.to_string()
                } else {
                    format!("library/{rest}")
                },
                tag: tag.to_string(),
            },
        })
    }

    /// The manifest URL. Loopback registries are spoken to in plain HTTP, as Docker does by
    /// default; every other registry over HTTPS.
    pub(crate) fn manifest_url(&self) -> String {
        format!(
            "{}://{}/v2/{}/manifests/{}",
            scheme_for(&self.api_host),
            self.api_host,
            self.repository,
            self.tag
        )
    }
}

fn scheme_for(host: &str) -> &'static str {
    if is_loopback(host) { "http" } else { "https" }
}

fn is_loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A user name and password from a docker config. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The credentials a docker config (`.dockerconfigjson`) holds for `config_host`; its keys may
/// carry a scheme or a path (`https://harbor.example/v2/`).
pub(crate) fn credentials_for(
    docker_config: &[u8],
    config_host: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let config: DockerConfig = serde_json::from_slice(docker_config)
        .map_err(|e| RegistryError::DockerConfig(e.to_string()))?;
    let host_of = |key: &str| {
        let no_scheme = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
            .unwrap_or(key);
        no_scheme.split('/').next().unwrap_or("").to_string()
    };
    let wanted = host_of(config_host);
    let hub = ["index.docker.io", "docker.io", DOCKER_HUB_API];
    let matches = |key: &str| {
        let h = host_of(key);
        h == wanted || (hub.contains(&wanted.as_str()) && hub.contains(&h.as_str()))
    };
    let Some(entry) = config
        .auths
        .iter()
        .find(|(k, _)| matches(k))
        .map(|(_, e)| e)
    else {
        return Ok(None);
    };
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        }));
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            RegistryError::DockerConfig(format!("the auth of {wanted} is not base64 user:password"))
        })?;
    let (username, password) = decoded.split_once(':').ok_or_else(|| {
        RegistryError::DockerConfig(format!("the auth of {wanted} is not user:password"))
    })?;
    Ok(Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    }))
}

/// What the registry said about a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Presence {
    /// The tag exists; `digest` is its manifest's digest when the registry sent a well-formed one.
    Present {
        digest: Option<String>,
    },
    Absent,
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => value.push(chars.next()?.1),
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end?..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            }
        };
        match key.as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
        scope,
    })
}

/// `application/x-www-form-urlencoded` escaping of a query value.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A digest as the OCI spec writes them (`algorithm:encoded`), or nothing.
fn well_formed_digest(value: &str) -> Option<String> {
    let (algorithm, encoded) = value.trim().split_once(':')?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
    let encoded_ok = encoded.len() >= 32
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
    (algorithm_ok && encoded_ok).then(|| value.trim().to_string())
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

type Https = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An HTTP(S) client for registry requests, verifying servers against the system's CA bundle.
pub(crate) struct Registry {
    http: Https,
}

impl Registry {
    pub(crate) fn new() -> Result<Registry, RegistryError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(RegistryError::Tls)?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Registry {
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Whether `image`'s tag exists: one manifest request; on a 401 one token request (bearer
    /// challenge) or none (basic challenge), then the manifest request once more. Bounded by
    /// [`CHECK_TIMEOUT`].
    #[tracing::instrument(skip(self, credentials), fields(registry = %image.api_host, repository = %image.repository, tag = %image.tag))]
    pub(crate) async fn tag_exists(
        &self,
        image: &ImageRef,
        credentials: Option<&Credentials>,
    ) -> Result<Presence, RegistryError> {
        tokio::time::timeout(CHECK_TIMEOUT, self.tag_exists_unbounded(image, credentials))
            .await
            .map_err(|_| RegistryError::Timeout(CHECK_TIMEOUT))?
    }

    async fn tag_exists_unbounded(
        &self,
        image: &ImageRef,
        credentials: Option<&Credentials>,
    ) -> Result<Presence, RegistryError> {
        let url = image.manifest_url();
        let first = self.request(Method::HEAD, &url, None, true).await?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return presence(&url, &first);
        }
        let challenge_header = first
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let challenge =
            parse_challenge(&challenge_header).ok_or_else(|| RegistryError::Challenge {
                url: url.clone(),
                challenge: challenge_header.clone(),
            })?;
        tracing::debug!(?challenge, "registry asks for authentication");
        let authorization = match challenge {
            Challenge::Basic => credentials
                .ok_or_else(|| RegistryError::NoCredentials {
                    url: url.clone(),
                    host: image.config_host.clone(),
                })?
                .basic(),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope =
                    scope.unwrap_or_else(|| format!("repository:{}:pull", image.repository));
                let token = self
                    .token(&realm, service.as_deref(), &scope, credentials)
                    .await?;
                format!("Bearer {token}")
            }
        };
        let second = self
            .request(Method::HEAD, &url, Some(&authorization), true)
            .await?;
        if second.status() == StatusCode::UNAUTHORIZED && credentials.is_none() {
            return Err(RegistryError::NoCredentials {
                url,
                host: image.config_host.clone(),
            });
        }
        presence(&url, &second)
    }

    /// One token request to the challenge's realm, with basic auth when there are credentials.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        let realm_uri: http::Uri = realm
            .parse()
            .map_err(|_| RegistryError::Url(realm.to_string()))?;
        let authority = realm_uri.authority().map(|a| a.as_str()).unwrap_or("");
        // Credentials travel only over TLS (or to this machine).
        match realm_uri.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback(authority) => {}
            _ => return Err(RegistryError::Url(realm.to_string())),
        }
        let mut url = realm.to_string();
        let mut sep = if realm.contains('?') { '&' } else { '?' };
        if let Some(s) = service {
            url.push_str(&format!("{sep}service={}", query_escape(s)));
            sep = '&';
        }
        url.push_str(&format!("{sep}scope={}", query_escape(scope)));
        let basic = credentials.map(Credentials::basic);
        let response = self
            .request(Method::GET, &url, basic.as_deref(), false)
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(RegistryError::Status {
                url,
                status: status.as_u16(),
            });
        }
        let body = Limited::new(response.into_body(), MAX_TOKEN_RESPONSE)
            .collect()
            .await
            .map_err(|e| RegistryError::Body {
                url: url.clone(),
                reason: e.to_string(),
            })?
            .to_bytes();
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| RegistryError::Token { url: url.clone() })?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or(RegistryError::Token { url })
    }

    async fn request(
        &self,
        method: Method,
        url: &str,
        authorization: Option<&str>,
        manifest: bool,
    ) -> Result<http::Response<hyper::body::Incoming>, RegistryError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(url)
            .header(USER_AGENT, concat!("arc-hook/", env!("CARGO_PKG_VERSION")));
        if manifest {
            builder = builder.header(ACCEPT, MANIFEST_ACCEPT);
        }
        if let Some(a) = authorization {
            builder = builder.header(AUTHORIZATION, a);
        }
        let request = builder
            .body(Empty::new())
            .map_err(|_| RegistryError::Url(url.to_string()))?;
        tracing::debug!(url, "registry request");
        self.http
            .request(request)
            .await
            .map_err(|source| RegistryError::Request {
                url: url.to_string(),
                source,
            })
    }
}

fn presence<B>(url: &str, response: &http::Response<B>) -> Result<Presence, RegistryError> {
    match response.status() {
        StatusCode::OK => Ok(Presence::Present {
            digest: response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(well_formed_digest),
        }),
        StatusCode::NOT_FOUND => Ok(Presence::Absent),
        s => Err(RegistryError::Status {
            url: url.to_string(),
            status: s.as_u16(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_host_repository_and_tag() {
        let r =
            ImageRef::parse("harbor.internal/ci-actions/org-act:0123456789abcdef").expect("parses");
        assert_eq!(r.api_host, "harbor.internal");
        assert_eq!(r.repository, "ci-actions/org-act");
        assert_eq!(r.tag, "0123456789abcdef");
        assert_eq!(
            r.manifest_url(),
            "https://harbor.internal/v2/ci-actions/org-act/manifests/0123456789abcdef"
        );
        let local = ImageRef::parse("127.0.0.1:5000/ci/act:t").expect("parses");
        assert_eq!(
            local.manifest_url(),
            "http://127.0.0.1:5000/v2/ci/act/manifests/t"
        );
        let hub = ImageRef::parse("myorg/act:t").expect("parses");
        assert_eq!(hub.api_host, "registry-1.docker.io");
        assert_eq!(hub.repository, "myorg/act");
        assert_eq!(hub.config_host, "https://index.docker.io/v1/");
        assert_eq!(
            ImageRef::parse("docker.io/act:t")
                .expect("parses")
                .repository,
            "library/act"
        );
        for bad in [
            "no-tag",
            "host.x/repo:",
            "host.x/:t",
            "host.x/r@sha256:ab:t",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("harbor.internal"));
    }

    #[test]
    fn credentials_come_from_the_matching_auths_entry() {
        let config = br#"{"auths": {
            "https://harbor.internal/v2/": {"auth": "cm9ib3Q6czNjcjN0"},
            "other.example": {"username": "u", "password": "p"},
            "https://index.docker.io/v1/": {"auth": "aHViOmh1YnB3"}
        }}"#;
        let c = credentials_for(config, "harbor.internal")
            .expect("valid")
            .expect("found");
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("robot", "s3cr3t")
        );
        assert!(
            !format!("{c:?}").contains("s3cr3t"),
            "Debug hides the password"
        );
        let o = credentials_for(config, "other.example")
            .expect("valid")
            .expect("found");
        assert_eq!(o.password, "p");
        let hub = credentials_for(config, DOCKER_HUB_CONFIG_KEY)
            .expect("valid")
            .expect("found");
        assert_eq!(hub.username, "hub");
        assert_eq!(
            credentials_for(config, "unknown.example").expect("valid"),
            None
        );
        assert!(credentials_for(b"{}", "x").expect("valid").is_none());
        assert!(matches!(
            credentials_for(b"not json", "x"),
            Err(RegistryError::DockerConfig(_))
        ));
        assert!(matches!(
            credentials_for(br#"{"auths": {"x": {"auth": "bm9jb2xvbg=="}}}"#, "x"),
            Err(RegistryError::DockerConfig(_))
        ));
    }

    #[test]
    fn challenges_parse_with_quoted_commas() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Harbor""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "no realm");
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(
            well_formed_digest(&format!("sha256:{}", "a".repeat(64))),
            Some(format!("sha256:{}", "a".repeat(64)))
        );
        assert_eq!(well_formed_digest("sha256:short"), None);
        assert_eq!(well_formed_digest("garbage"), None);
    }
}

#[cfg(all(test, feature = "sim"))]
mod against_a_fake_registry {
    use super::*;
    use crate::sim::registry::{FakeAuth, FakeRegistry, fake_digest};

    fn robot() -> Credentials {
        Credentials {
            username: "robot".into(),
            password: "s3cr3t".into(),
        }
    }

    #[tokio::test]
    async fn a_bearer_challenge_gets_one_token_then_one_retry() {
        let fake = FakeRegistry::start(
            FakeAuth::Bearer {
                username: "robot".into(),
                password: "s3cr3t".into(),
            },
            None,
        )
        .await
        .expect("fake registry");
        fake.push("ci/org-act", "0123456789abcdef");
        let registry = Registry::new().expect("client");
        let present = ImageRef::parse(&format!("{}/ci/org-act:0123456789abcdef", fake.host()))
            .expect("reference");
        assert_eq!(
            registry
                .tag_exists(&present, Some(&robot()))
                .await
                .expect("answer"),
            Presence::Present {
                digest: Some(fake_digest("ci/org-act", "0123456789abcdef"))
            }
        );
        let requests = fake.requests();
        let summary: Vec<(&str, &str)> = requests
            .iter()
            .map(|r| (r.method.as_str(), r.target.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("HEAD", "/v2/ci/org-act/manifests/0123456789abcdef"),
                (
                    "GET",
                    "/token?service=fake-registry&scope=repository%3Aci%2Forg-act%3Apull"
                ),
                ("HEAD", "/v2/ci/org-act/manifests/0123456789abcdef"),
            ]
        );
        assert_eq!(requests[0].authorization, None);
        assert_eq!(
            requests[1].authorization.as_deref(),
            Some("Basic cm9ib3Q6czNjcjN0")
        );
        assert_eq!(
            requests[2].authorization.as_deref(),
            Some("Bearer fake-token-1")
        );
        assert_eq!(requests[0].accept.as_deref(), Some(MANIFEST_ACCEPT));

        let absent =
            ImageRef::parse(&format!("{}/ci/org-act:fedcba9876543210", fake.host())).expect("ref");
        assert_eq!(
            registry
                .tag_exists(&absent, Some(&robot()))
                .await
                .expect("answer"),
            Presence::Absent
        );
        let wrong = Credentials {
            username: "robot".into(),
            password: "wrong".into(),
        };
        let err = registry
            .tag_exists(&absent, Some(&wrong))
            .await
            .expect_err("refused");
        assert!(
            matches!(err, RegistryError::Status { status: 401, .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("wrong"), "{err}");
        fake.fail_with(Some(503));
        let err = registry
            .tag_exists(&absent, Some(&robot()))
            .await
            .expect_err("outage");
        assert!(
            matches!(err, RegistryError::Status { status: 503, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_basic_challenge_retries_with_the_credentials() {
        let fake = FakeRegistry::start(
            FakeAuth::Basic {
                username: "robot".into(),
                password: "s3cr3t".into(),
            },
            None,
        )
        .await
        .expect("fake registry");
        fake.push("ci/act", "t1");
        let registry = Registry::new().expect("client");
        let image = ImageRef::parse(&format!("{}/ci/act:t1", fake.host())).expect("ref");
        assert!(matches!(
            registry.tag_exists(&image, Some(&robot())).await,
            Ok(Presence::Present { .. })
        ));
        assert_eq!(fake.requests().len(), 2);
        assert_eq!(
            fake.requests()[1].authorization.as_deref(),
            Some("Basic cm9ib3Q6czNjcjN0")
        );
        assert!(matches!(
            registry.tag_exists(&image, None).await,
            Err(RegistryError::NoCredentials { .. })
        ));
    }

    /// An IPv6 registry: bracketed in the reference and the URLs (the token realm included),
    /// loopback spoken to in plain HTTP like 127.0.0.1.
    #[tokio::test]
    async fn an_ipv6_registry_is_reached_by_its_bracketed_address() {
        let fake = FakeRegistry::start_on(
            std::net::Ipv6Addr::LOCALHOST.into(),
            FakeAuth::Bearer {
                username: "robot".into(),
                password: "s3cr3t".into(),
            },
            None,
        )
        .await
        .expect("a registry on [::1] (the test needs IPv6 loopback)");
        assert!(fake.host().starts_with("[::1]:"), "{}", fake.host());
        fake.push("ci/act", "t1");
        let image = ImageRef::parse(&format!("{}/ci/act:t1", fake.host())).expect("ref");
        assert_eq!(image.api_host, fake.host());
        assert_eq!(
            image.manifest_url(),
            format!("http://{}/v2/ci/act/manifests/t1", fake.host())
        );
        let registry = Registry::new().expect("client");
        assert!(matches!(
            registry.tag_exists(&image, Some(&robot())).await,
            Ok(Presence::Present { .. })
        ));
        let remote = ImageRef::parse("[fd00:10::5]:5000/ci/act:t").expect("parses");
        assert_eq!(
            remote.manifest_url(),
            "https://[fd00:10::5]:5000/v2/ci/act/manifests/t"
        );
        assert_eq!(
            crate::objects::secret::registry_host("[fd00:10::5]:5000/ci/act:t"),
            Some("[fd00:10::5]:5000")
        );
    }

    #[tokio::test]
    async fn a_registry_that_never_answers_is_given_up_on() {
        // A listener that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let host = listener.local_addr().expect("addr").to_string();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        tokio::time::pause();
        let registry = Registry::new().expect("client");
        let image = ImageRef::parse(&format!("{host}/ci/act:t1")).expect("ref");
        let err = registry
            .tag_exists(&image, None)
            .await
            .expect_err("timeout");
        assert!(matches!(err, RegistryError::Timeout(_)), "{err}");
    }
}
