//! The API server's string rules (names, label keys and values, env var names, config keys), written from apimachinery's `util/validation/validation.go` independently of the hook's own `crate::validate`.
//!
//! Each function returns the messages kube-apiserver 1.32 gives for a value, in its order; an
//! empty list means valid. The test vectors below are the ones in Kubernetes' `validation_test.go`.

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const DNS1035_LABEL_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const LABEL_KEY_NAME_MAX: usize = 63;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
#[cfg(test)] // only the unit tests use it
const ENV_VAR_NAME_FMT: &str = "[-._a-zA-Z][-._a-zA-Z0-9]*";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

/// apimachinery's `RegexError`: the message, the examples, the regex.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(&format!("'{e}', "));
    }
    s.push_str(&format!("regex used for validation is '{fmt}')"));
    s
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} bytes")
}

fn lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(v: &str) -> bool {
    let b = v.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            lower_alnum(f) && lower_alnum(l) && b.iter().all(|&c| lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

fn matches_dns1123_subdomain(v: &str) -> bool {
    v.split('.').all(matches_dns1123_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name(v: &str) -> bool {
    let b = v.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `IsDNS1123Label` (container names, namespace names, volume names).
pub(crate) fn dns1123_label(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !matches_dns1123_label(v) {
        if matches_dns1123_subdomain(v) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// `IsDNS1123Subdomain` (most object names).
pub(crate) fn dns1123_subdomain(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !matches_dns1123_subdomain(v) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// `IsDNS1035Label` (Service names).
pub(crate) fn dns1035_label(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > DNS1035_LABEL_MAX {
        errs.push(max_len_error(DNS1035_LABEL_MAX));
    }
    let ok = matches_dns1123_label(v) && v.as_bytes()[0].is_ascii_lowercase();
    if !ok {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `IsQualifiedName` (label keys, node selector keys).
pub(crate) fn qualified_name(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = v.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"],
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > LABEL_KEY_NAME_MAX {
        errs.push(format!("name part {}", max_len_error(LABEL_KEY_NAME_MAX)));
    }
    if !matches_qualified_name(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"],
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`.
pub(crate) fn label_value(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > LABEL_VALUE_MAX {
        errs.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !(v.is_empty() || matches_qualified_name(v)) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `hasChDirPrefix`: names that would be a path step out of a directory.
fn chdir_prefix(v: &str) -> Option<&'static str> {
    if v == "." {
        Some("must not be '.'")
    } else if v == ".." {
        Some("must not be '..'")
    } else if v.starts_with("..") {
        Some("must not start with '..'")
    } else {
        None
    }
}

/// `[-._a-zA-Z0-9]`, the characters of config keys and (strict) env var names.
fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')
}

/// `IsEnvVarName`: the strict rule (before 1.32, or with the RelaxedEnvironmentVariableValidation gate off).
#[cfg(test)] // only the unit tests use it
pub(crate) fn env_var_name_strict(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let ok = v.bytes().next().is_some_and(|c| !c.is_ascii_digit()) && v.bytes().all(is_key_char);
    if !ok {
        errs.push(regex_error(
            "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
            ENV_VAR_NAME_FMT,
            &["my.env-name", "MY_ENV.NAME", "MyEnvName1"],
        ));
    }
    errs.extend(chdir_prefix(v).map(str::to_string));
    errs
}

/// `IsRelaxedEnvVarName`: the rule from 1.32 on (the RelaxedEnvironmentVariableValidation gate,
/// beta and on by default): printable ASCII except `=`.
pub(crate) fn env_var_name_relaxed(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.is_empty() {
        errs.push("environment variable name must be non-empty".to_string());
    }
    if v.chars().any(|c| !(' '..='~').contains(&c) || c == '=') {
        errs.push(
            "a valid environment variable name must consist only of printable ASCII characters other than '='"
                .to_string(),
        );
    }
    errs
}

/// `IsConfigMapKey` (ConfigMap and Secret data keys, `items[].key`).
pub(crate) fn config_key(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    let ok = !v.is_empty() && v.bytes().all(is_key_char);
    if !ok {
        errs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    errs.extend(chdir_prefix(v).map(str::to_string));
    errs
}

/// Test vectors: Kubernetes' own, from apimachinery's `util/validation/validation_test.go`
/// (`TestIsDNS1123Label`, `TestIsQualifiedName`, `TestIsRelaxedEnvVarName`...), shared with the
/// test that compares the hook's rules to these.
#[cfg(test)] // only the unit tests use it
pub(crate) mod vectors {
    /// A rule's accepted and refused values.
    pub(crate) struct Vectors {
        pub good: Vec<String>,
        pub bad: Vec<String>,
    }

    fn own(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Good DNS-1123 labels; every label is a good subdomain too.
    const LABELS: &[&str] = &[
        "a",
        "ab",
        "abc",
        "a1",
        "a-1",
        "a--1--2--b",
        "0",
        "01",
        "012",
        "1a",
        "1-a",
        "1--a--b--2",
    ];

    /// Bad labels and bad subdomains alike: empty, upper case, `_`, spaces, a dash at an end.
    const NEITHER: &[&str] = &[
        "", "A", "ABC", "aBc", "A1", "A-1", "1-A", "-", "a-", "-a", "1-", "-1", "_", "a_", "_a",
        "a_b", "1_", "_1", "1_2", " ", "a ", " a", "a b", "1 ", " 1", "1 2",
    ];

    pub(crate) fn dns1123_label() -> Vectors {
        let mut good = own(LABELS);
        good.push("a".repeat(63));
        let mut bad = own(NEITHER);
        bad.extend(own(&[".", "a.", ".a", "a.b", "1.", ".1", "1.2"]));
        bad.push("a".repeat(64));
        Vectors { good, bad }
    }

    pub(crate) fn dns1123_subdomain() -> Vectors {
        let mut good = own(LABELS);
        good.extend(own(&[
            "a.a",
            "ab.a",
            "abc.a",
            "a1.a",
            "a-1.a",
            "a--1--2--b.a",
            "a.1",
            "ab.1",
            "abc.1",
            "a1.1",
            "a-1.1",
            "a--1--2--b.1",
            "0.a",
            "01.a",
            "012.a",
            "1a.a",
            "1-a.a",
            "0.1",
            "01.1",
            "012.1",
            "1a.1",
            "1-a.1",
            "1--a--b--2.1",
            "a.b.c.d.e",
            "aa.bb.cc.dd.ee",
            "1.2.3.4.5",
            "11.22.33.44.55",
        ]));
        good.push("a".repeat(253));
        let mut bad = own(NEITHER);
        bad.extend(own(&[
            ".",
            "a.",
            ".a",
            "a..b",
            "1.",
            ".1",
            "1..2",
            "A.a",
            "aB.a",
            "ab.A",
            "A1.a",
            "a1.A",
            "A.1",
            "aB.1",
            "A1.1",
            "1A.1",
            "0.A",
            "01.A",
            "012.A",
            "1A.a",
            "1a.A",
            "A.B.C.D.E",
            "AA.BB.CC.DD.EE",
            "a.B.c.d.e",
            "aa.bB.cc.dd.ee",
            "a@b",
            "a,b",
            "a_b",
            "a;b",
            "a:b",
            "a%b",
            "a?b",
            "a$b",
        ]));
        bad.push("a".repeat(254));
        Vectors { good, bad }
    }

    pub(crate) fn qualified_name() -> Vectors {
        let mut good = own(&[
            "simple",
            "now-with-dashes",
            "1-starts-with-num",
            "1234",
            "simple/simple",
            "now-with-dashes/simple",
            "now-with-dashes/now-with-dashes",
            "now.with.dots/simple",
            "now-with.dashes-and.dots/simple",
            "1-num.2-num/3-num",
            "1234/5678",
            "1.2.3.4/5678",
            "Uppercase_Is_OK_123",
            "example.com/Uppercase_Is_OK_123",
            "requests.storage-foo",
        ]);
        good.push("a".repeat(63));
        good.push(format!("{}/{}", "a".repeat(253), "b".repeat(63)));
        let mut bad = own(&[
            "nospecialchars%^=@",
            "cantendwithadash-",
            "-cantstartwithadash-",
            "only/one/slash",
            "Example.com/abc",
            "example_com/abc",
            "example.com/",
            "/simple",
        ]);
        bad.push("a".repeat(64));
        bad.push(format!("{}/abc", "a".repeat(254)));
        Vectors { good, bad }
    }

    pub(crate) fn label_value() -> Vectors {
        let mut good = own(&[
            "simple",
            "now-with-dashes",
            "1-starts-with-num",
            "end-with-num-1",
            "1234",
            "",
        ]);
        good.push("a".repeat(63));
        let mut bad = own(&[
            "nospecialchars%^=@",
            "Tama-nui-te-rā.is.Māori.sun",
            "\\backslashes\\are\\bad",
            "-starts-with-dash",
            "ends-with-dash-",
            ".starts.with.dot",
            "ends.with.dot.",
        ]);
        bad.push("a".repeat(64));
        Vectors { good, bad }
    }

    /// `IsEnvVarName`'s own examples and regex, and `hasChDirPrefix`'s three cases.
    pub(crate) fn env_var_name_strict() -> Vectors {
        Vectors {
            good: own(&[
                "abc",
                "ABC",
                "AbC_123",
                "abc",
                "a.b.c",
                "a-b-c",
                "_abc",
                "my.env-name",
                "MY_ENV.NAME",
                "MyEnvName1",
                ".abc",
                "a..b",
            ]),
            bad: own(&[
                "", "1ABC", "a b", "a=b", "a:b", "a/b", "a$b", ".", "..", "..abc", "...abc", "Ç",
                "A\tB",
            ]),
        }
    }

    /// `TestIsRelaxedEnvVarName`.
    pub(crate) fn env_var_name_relaxed() -> Vectors {
        Vectors {
            good: own(&[
                "-", ":", "_", "+a", ">a", "<a", "a.", "a..", "*a", "%a", "?a", "a:a", "a_a",
                "aAz", "~a", "|a", "a0a", "a9", "/a", "a ", "#a", "0a", "0 a", "'a", "(a", "@a",
                ".", "..", "..abc",
            ]),
            bad: vec![
                String::new(),
                "=".into(),
                "a=".into(),
                "1=a".into(),
                "a=b".into(),
                "#%=&&".into(),
                format!("{}abc", char::from(1)),
                format!("{}abc", char::from_u32(130).unwrap_or('\u{82}')),
                "Ç ç".into(),
                "Ä ä".into(),
                "Ñ ñ".into(),
                "Ø ø".into(),
            ],
        }
    }

    /// `TestIsConfigMapKey`.
    pub(crate) fn config_key() -> Vectors {
        Vectors {
            good: own(&[
                "a",
                "good",
                "good-good",
                "still.good",
                "this.is.also.good",
                ".so.is.this",
                "THIS_IS_GOOD",
                "so_is_this_17",
            ]),
            bad: own(&[".", "..", "..bad", "b*d", "bad!&bad"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::vectors::Vectors;
    use super::*;

    fn check(rule: fn(&str) -> Vec<String>, v: Vectors, name: &str) {
        for g in &v.good {
            assert!(rule(g).is_empty(), "{name}: {g:?} refused: {:?}", rule(g));
        }
        for b in &v.bad {
            assert!(!rule(b).is_empty(), "{name}: {b:?} accepted");
        }
    }

    #[test]
    fn kubernetes_vectors_hold() {
        check(dns1123_label, vectors::dns1123_label(), "dns1123_label");
        check(
            dns1123_subdomain,
            vectors::dns1123_subdomain(),
            "dns1123_subdomain",
        );
        check(qualified_name, vectors::qualified_name(), "qualified_name");
        check(label_value, vectors::label_value(), "label_value");
        check(
            env_var_name_strict,
            vectors::env_var_name_strict(),
            "env strict",
        );
        check(
            env_var_name_relaxed,
            vectors::env_var_name_relaxed(),
            "env relaxed",
        );
        check(config_key, vectors::config_key(), "config_key");
    }

    #[test]
    fn messages_are_the_api_servers() {
        assert_eq!(env_var_name_strict(".."), vec!["must not be '..'"]);
        assert_eq!(env_var_name_strict("..X"), vec!["must not start with '..'"]);
        assert_eq!(env_var_name_strict("."), vec!["must not be '.'"]);
        assert_eq!(
            env_var_name_strict("1X"),
            vec![
                "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"
            ]
        );
        assert_eq!(
            env_var_name_relaxed("A=B"),
            vec![
                "a valid environment variable name must consist only of printable ASCII characters other than '='"
            ]
        );
        assert_eq!(dns1123_label("a.b"), vec!["must not contain dots"]);
        assert_eq!(qualified_name("/x"), vec!["prefix part must be non-empty"]);
        assert_eq!(config_key("..x"), vec!["must not start with '..'"]);
        assert!(dns1035_label("1abc").len() == 1 && dns1035_label("abc").is_empty());
    }
}
