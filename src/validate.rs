//! Kubernetes' name and label rules as the hook checks them before it creates objects (the simulator has its own copy, `sim::validation`, to test these against).

/// Maximum length of a DNS-1123 label (container names, pod names used as hostnames, label values).
pub(crate) const DNS1123_LABEL_MAX: usize = 63;
/// Maximum length of a DNS-1123 subdomain (most object names).
pub(crate) const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Maximum length of a label value.
pub(crate) const LABEL_VALUE_MAX: usize = 63;

const DNS1123_LABEL_FMT: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_FMT: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_VALUE_FMT: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const ENV_VAR_FMT: &str = "a valid environment variable name must consist only of printable ASCII characters other than '='";

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Checks a DNS-1123 label; returns the API server's messages for each violated rule.
pub fn dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_dns1123_label_shape(value) {
        errs.push(DNS1123_LABEL_FMT.to_string());
    }
    errs
}

fn is_dns1123_label_shape(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// Checks a DNS-1123 subdomain (the rule for most object names).
pub fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if value.is_empty() || !value.split('.').all(is_dns1123_label_shape) {
        errs.push(DNS1123_SUBDOMAIN_FMT.to_string());
    }
    errs
}

/// Checks a label value (may be empty).
pub fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        errs.push(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    let b = value.as_bytes();
    let ok = b.is_empty()
        || (b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.'));
    if !ok {
        errs.push(LABEL_VALUE_FMT.to_string());
    }
    errs
}

/// Checks a label key: an optional DNS-1123 subdomain prefix and `/`, then a name part of at
/// most 63 characters following the label-value shape (but not empty).
pub fn label_key(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let mut errs = Vec::new();
    if name.contains('/') {
        errs.push("a qualified name may contain at most one '/'".to_string());
    }
    match prefix {
        Some("") => errs.push("prefix part must be non-empty".to_string()),
        Some(p) => errs.extend(
            dns1123_subdomain(p)
                .into_iter()
                .map(|e| format!("prefix part {e}")),
        ),
        None => {}
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        errs.extend(
            label_value(name)
                .into_iter()
                .map(|e| format!("name part {e}")),
        );
    }
    errs
}

/// Checks an environment variable name with the rule of Kubernetes 1.32 and later
/// (`IsRelaxedEnvVarName`, on by default from 1.32): printable ASCII except `=`. Clusters before
/// 1.32 apply the stricter `[-._a-zA-Z][-._a-zA-Z0-9]*` (and refuse `.`, `..`, `..X`); there a
/// name this accepts but the cluster does not is refused by the API server when the pod is
/// created, with its own message naming the field.
pub fn env_var_name(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push("environment variable name must be non-empty".to_string());
    }
    if name.chars().any(|c| !(' '..='~').contains(&c) || c == '=') {
        errs.push(ENV_VAR_FMT.to_string());
    }
    errs
}

/// Turns an arbitrary string into a valid DNS-1123 label of at most `max` characters:
/// lower-cased, runs of invalid characters become `-`, leading/trailing `-` trimmed.
/// Returns `fallback` when nothing usable remains.
pub(crate) fn to_dns1123_label(raw: &str, max: usize, fallback: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = truncate_label(out.trim_matches('-'), max);
    if trimmed.is_empty() {
        fallback.to_string()
    } else {
        trimmed
    }
}

/// Truncates a valid label-shaped string to `max` bytes and strips the trailing
/// non-alphanumerics truncation may expose, so the result stays valid.
pub(crate) fn truncate_label(value: &str, max: usize) -> String {
    let cut = if value.len() > max {
        &value[..max]
    } else {
        value
    };
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(dns1123_label("job").is_empty());
        assert!(dns1123_label("a-b-1").is_empty());
        assert!(!dns1123_label("-a").is_empty());
        assert!(!dns1123_label("A").is_empty());
        assert!(!dns1123_label("").is_empty());
        assert_eq!(dns1123_label(&"a".repeat(64)).len(), 1);
        assert!(dns1123_label(&"a".repeat(63)).is_empty());
    }

    #[test]
    fn subdomains() {
        assert!(dns1123_subdomain("a.b-c.d").is_empty());
        assert!(!dns1123_subdomain("a..b").is_empty());
        assert!(!dns1123_subdomain("a_b").is_empty());
    }

    #[test]
    fn label_values_and_keys() {
        assert!(label_value("").is_empty());
        assert!(label_value("My_value.1").is_empty());
        assert!(!label_value("_x").is_empty());
        assert!(label_key("actions.github.com/runner-pod").is_empty());
        assert!(!label_key("/x").is_empty());
        assert!(!label_key("a/").is_empty());
    }

    #[test]
    fn env_names() {
        assert!(env_var_name("GITHUB_ENV").is_empty());
        assert!(env_var_name("my.env-name").is_empty());
        assert!(env_var_name("1ABC").is_empty(), "accepted from 1.32 on");
        assert!(env_var_name("MY VAR").is_empty(), "accepted from 1.32 on");
        assert!(!env_var_name("Ç").is_empty());
        assert!(!env_var_name("A=B").is_empty());
        assert!(!env_var_name("").is_empty());
    }

    #[test]
    fn sanitising() {
        assert_eq!(to_dns1123_label("My Service_1", 63, "svc"), "my-service-1");
        assert_eq!(to_dns1123_label("___", 63, "svc"), "svc");
        assert_eq!(to_dns1123_label("abc-def", 4, "x"), "abc");
        assert_eq!(truncate_label("abcd-efg", 5), "abcd");
    }

    type Rule = fn(&str) -> Vec<String>;

    /// Runs the hook's rule and the simulator's (written from the API's source) on the same
    /// Kubernetes test vectors; returns the values where the hook is stricter and looser.
    fn compare(
        hook: fn(&str) -> Vec<String>,
        api: fn(&str) -> Vec<String>,
        v: crate::sim::validation::vectors::Vectors,
    ) -> (Vec<String>, Vec<String>) {
        let (mut stricter, mut looser) = (Vec::new(), Vec::new());
        for value in v.good.iter().chain(&v.bad) {
            match (hook(value).is_empty(), api(value).is_empty()) {
                (false, true) => stricter.push(value.clone()),
                (true, false) => looser.push(value.clone()),
                _ => {}
            }
        }
        (stricter, looser)
    }

    #[test]
    fn the_hooks_rules_agree_with_the_api_servers() {
        use crate::sim::validation as api;
        use crate::sim::validation::vectors;
        let (label_key_v, mut all_env) =
            (vectors::qualified_name(), vectors::env_var_name_relaxed());
        all_env.good.extend(vectors::env_var_name_strict().good);
        all_env.bad.extend(vectors::env_var_name_strict().bad);
        let cases: Vec<(&str, Rule, Rule, vectors::Vectors)> = vec![
            (
                "dns1123_label",
                dns1123_label,
                api::dns1123_label,
                vectors::dns1123_label(),
            ),
            (
                "dns1123_subdomain",
                dns1123_subdomain,
                api::dns1123_subdomain,
                vectors::dns1123_subdomain(),
            ),
            ("label_key", label_key, api::qualified_name, label_key_v),
            (
                "label_value",
                label_value,
                api::label_value,
                vectors::label_value(),
            ),
            (
                "env_var_name (1.32+)",
                env_var_name,
                api::env_var_name_relaxed,
                all_env,
            ),
        ];
        for (rule, hook, api, v) in cases {
            let (stricter, looser) = compare(hook, api, v);
            assert!(
                stricter.is_empty() && looser.is_empty(),
                "{rule}: the hook is stricter than the API on {stricter:?} and looser on {looser:?}"
            );
        }
        // Before 1.32 the API applies the strict env rule: the hook is only ever looser there
        // (the API server then refuses the pod, naming the field).
        let mut v = vectors::env_var_name_strict();
        v.good.extend(vectors::env_var_name_relaxed().good);
        v.bad.extend(vectors::env_var_name_relaxed().bad);
        let (stricter, looser) = compare(env_var_name, api::env_var_name_strict, v);
        assert!(
            stricter.is_empty(),
            "stricter than any cluster: {stricter:?}"
        );
        for name in [".", "..", "..abc", "1ABC", "a b"] {
            assert!(looser.contains(&name.to_string()), "{name:?}: {looser:?}");
        }
    }
}
