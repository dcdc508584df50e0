//! The `kubernetes.io/dockerconfigjson` Secret holding the job's registry credentials.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::{BuildContext, BuildError, runner_annotations, runner_labels};
use crate::protocol::Registry;

/// Credentials for one image, with the field path used in errors.
pub(crate) struct PullCredentials<'a> {
    pub field: String,
    pub image: &'a str,
    pub registry: &'a Registry,
}

/// The registry host an image reference names, if any (`host[:port]/repo`, or `localhost/repo`).
pub(crate) fn registry_host(image: &str) -> Option<&str> {
    let (first, rest) = image.split_once('/')?;
    (!rest.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost"))
        .then_some(first)
}

/// Builds the pull secret for every credentialled image (job container and services), one
/// `auths` entry per registry. Returns `None` when no image has credentials.
pub(crate) fn registry_secret(
    ctx: &BuildContext,
    name: &str,
    creds: &[PullCredentials<'_>],
) -> Result<Option<Secret>, BuildError> {
    let mut auths = serde_json::Map::new();
    // (field, (server, user, password)) of the credentials taken so far.
    let mut seen: Vec<(String, (String, String, String))> = Vec::new();
    for c in creds.iter().filter(|c| c.registry.has_credentials()) {
        let server = match c
            .registry
            .server_url
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            Some(s) => s.to_string(),
            // No host in the image: Docker's default registry, under the key Docker uses.
            None => registry_host(c.image)
                .map(str::to_string)
                .unwrap_or_else(|| ctx.default_registry.clone()),
        };
        let user = c.registry.username.as_deref().unwrap_or_default();
        let pass = c.registry.password.as_deref().unwrap_or_default();
        if let Some((other, have)) = seen.iter().find(|(_, (srv, _, _))| *srv == server) {
            let (_, u, p) = have;
            if u != user || p != pass {
                return Err(BuildError::ConflictingCredentials {
                    server,
                    first: other.clone(),
                    second: c.field.clone(),
                });
            }
        }
        seen.push((
            c.field.clone(),
            (server.clone(), user.to_string(), pass.to_string()),
        ));
        auths.insert(
            server,
            json!({
                "username": user,
                "password": pass,
                "auth": B64.encode(format!("{user}:{pass}")),
            }),
        );
    }
    if auths.is_empty() {
        return Ok(None);
    }
    let config = json!({ "auths": auths }).to_string();
    Ok(Some(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(runner_labels(ctx, "registry-credentials")),
            annotations: Some(runner_annotations(ctx)),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".to_string()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            ByteString(config.into_bytes()),
        )])),
        ..Default::default()
    }))
}

/// A copy of `secret` with every data value replaced, for printing.
pub(crate) fn redacted(secret: &Secret) -> Secret {
    let mut s = secret.clone();
    if let Some(data) = s.data.as_mut() {
        for v in data.values_mut() {
            *v = ByteString(b"<redacted: pass --show-secrets to print>".to_vec());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> BuildContext {
        crate::objects::test_context()
    }

    fn reg(server: Option<&str>) -> Registry {
        Registry {
            username: Some("bot".into()),
            password: Some("s3cr3t".into()),
            server_url: server.map(str::to_string),
        }
    }

    #[test]
    fn dockerconfigjson_content() {
        let r = reg(Some("registry.example.internal"));
        let s = registry_secret(
            &ctx(),
            "arc-runner-secret-abcdefgh",
            &[PullCredentials {
                field: "args.container.registry".into(),
                image: "registry.example.internal/app:1",
                registry: &r,
            }],
        )
        .expect("valid")
        .expect("credentials given");
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        let raw = &s.data.as_ref().expect("data")[".dockerconfigjson"].0;
        let v: serde_json::Value = serde_json::from_slice(raw).expect("json");
        let entry = &v["auths"]["registry.example.internal"];
        assert_eq!(entry["auth"], B64.encode("bot:s3cr3t"));
        assert_eq!(entry["username"], "bot");
        assert_eq!(entry["password"], "s3cr3t");
        // k8s-openapi serialises data base64-encoded, as the API expects.
        let wire = serde_json::to_value(&s).expect("serialises");
        let encoded = wire["data"][".dockerconfigjson"].as_str().expect("string");
        assert_eq!(B64.decode(encoded).expect("base64"), raw.clone());
        assert_eq!(
            s.metadata.labels.as_ref().expect("labels")["runner-pod"],
            "arc-runner"
        );
    }

    /// The docker-config keys of the pull secret for `image`'s credentials.
    fn auth_keys(ctx: &BuildContext, image: &str, r: &Registry) -> Vec<String> {
        let c = [PullCredentials {
            field: "args.container.registry".into(),
            image,
            registry: r,
        }];
        let s = registry_secret(ctx, "n", &c).expect("valid").expect("some");
        let v: serde_json::Value =
            serde_json::from_slice(&s.data.expect("data")[".dockerconfigjson"].0).expect("json");
        v["auths"]
            .as_object()
            .expect("auths")
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn server_from_image_or_default() {
        let r = reg(None);
        assert_eq!(
            auth_keys(&ctx(), "registry.example.internal:5000/a/b:1", &r),
            ["registry.example.internal:5000"]
        );
        assert_eq!(
            auth_keys(&ctx(), "library/app:1", &r),
            [crate::config::DOCKER_HUB_CONFIG_KEY],
            "an image without a host uses Docker Hub's key, as Docker mode does"
        );
        let mut with_default = ctx();
        with_default.default_registry = "default-registry.example.internal".into();
        assert_eq!(
            auth_keys(&with_default, "library/app:1", &r),
            ["default-registry.example.internal"]
        );
    }

    #[test]
    fn one_registry_two_passwords_is_refused() {
        let a = reg(Some("registry.example.internal"));
        let mut b = a.clone();
        b.password = Some("other".into());
        let c = [
            PullCredentials {
                field: "args.container.registry".into(),
                image: "registry.example.internal/a:1",
                registry: &a,
            },
            PullCredentials {
                field: "args.services[0].registry".into(),
                image: "registry.example.internal/b:1",
                registry: &b,
            },
        ];
        let e = registry_secret(&ctx(), "n", &c).expect_err("conflict");
        let msg = e.to_string();
        assert!(
            msg.contains("args.container.registry") && msg.contains("args.services[0].registry"),
            "{msg}"
        );
        assert!(!msg.contains("other"), "never the password: {msg}");
    }

    #[test]
    fn no_credentials_no_secret() {
        let r = Registry {
            username: Some("u".into()),
            password: None,
            server_url: Some("x.example.internal".into()),
        };
        let c = [PullCredentials {
            field: "f".into(),
            image: "x.example.internal/a",
            registry: &r,
        }];
        assert!(registry_secret(&ctx(), "n", &c).expect("valid").is_none());
    }

    #[test]
    fn redaction_hides_values() {
        let r = reg(Some("registry.example.internal"));
        let c = [PullCredentials {
            field: "f".into(),
            image: "a",
            registry: &r,
        }];
        let s = registry_secret(&ctx(), "n", &c)
            .expect("valid")
            .expect("some");
        let printed = serde_json::to_string(&redacted(&s)).expect("serialises");
        assert!(!printed.contains(&B64.encode("bot:s3cr3t")));
    }

    #[test]
    fn hosts() {
        assert_eq!(registry_host("redis:7"), None);
        assert_eq!(registry_host("library/redis"), None);
        assert_eq!(registry_host("localhost/x"), Some("localhost"));
        assert_eq!(registry_host("a.b/x/y:1"), Some("a.b"));
    }
}
