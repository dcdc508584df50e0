//! Image references as the kubelet parses them before a pull (`ParseNormalizedNamed` of distribution/reference, via the kubelet's `pkg/kubelet/images/image_manager.go`): what it refuses becomes `InvalidImageName`.

/// Longest repository name (`NameTotalLengthMax`).
const NAME_MAX: usize = 255;

/// The kubelet's message for an image it refuses to pull, or `None` for a valid reference.
pub(crate) fn invalid_image_message(image: &str) -> Option<String> {
    let err = parse_normalized(image).err()?;
    Some(format!(
        "Failed to apply default image tag \"{image}\": couldn't parse image name \"{image}\": {err}"
    ))
}

/// distribution/reference's `ParseNormalizedNamed`, answering its error text.
fn parse_normalized(s: &str) -> Result<(), String> {
    const INVALID: &str = "invalid reference format";
    if s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return Err(format!(
            "invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        ));
    }
    // splitDockerDomain: a first component without '.' or ':' that is lowercase and not
    // `localhost` is a Docker Hub path, not a domain.
    let (domain, remainder) = match s.split_once('/') {
        Some((d, rest)) if d.contains(['.', ':']) || d == "localhost" || d.to_lowercase() != d => {
            (Some(d), rest)
        }
        _ => (None, s),
    };
    let name_end = remainder.find(':').unwrap_or(remainder.len());
    let repo = &remainder[..name_end];
    if repo.to_lowercase() != repo {
        return Err(format!(
            "{INVALID}: repository name ({}) must be lowercase",
            if domain.is_none() && !repo.contains('/') {
                format!("library/{repo}")
            } else {
                repo.to_string()
            }
        ));
    }
    // The anchored reference grammar: name [":" tag] ["@" digest].
    let (rest, digest) = match remainder.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (remainder, None),
    };
    let (path, tag) = match rest.rsplit_once(':') {
        Some((p, t)) => (p, Some(t)),
        None => (rest, None),
    };
    if let Some(d) = domain
        && !valid_domain(d)
    {
        return Err(INVALID.into());
    }
    if !path.split('/').all(valid_path_component) {
        return Err(INVALID.into());
    }
    if let Some(t) = tag
        && !valid_tag(t)
    {
        return Err(INVALID.into());
    }
    if let Some(d) = digest {
        validate_digest(d)?;
    }
    let name_len = domain.map(|d| d.len() + 1).unwrap_or(0) + path.len();
    if name_len > NAME_MAX {
        return Err(format!(
            "repository name must not be more than {NAME_MAX} characters"
        ));
    }
    Ok(())
}

/// `host [":" port]`, host a dotted name of `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?` components
/// (IPv6 literals are not modelled).
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
    };
    host.split('.').all(component)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// The grammar's `algorithm ":" hex{32,}`, then go-digest's checks of the algorithm and length.
fn validate_digest(d: &str) -> Result<(), String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err("invalid reference format".into());
    };
    let alg_ok = !alg.is_empty()
        && alg.split(['+', '.', '-', '_']).all(|c| {
            c.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                && c.bytes().all(|x| x.is_ascii_alphanumeric())
        });
    if !alg_ok || hex.len() < 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err("invalid reference format".into());
    }
    let want = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm".into()),
    };
    if hex.len() != want {
        return Err("invalid checksum digest length".into());
    }
    if hex.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err("invalid checksum digest format".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from distribution/reference's `reference_test.go` and `normalize_test.go`.
    #[test]
    fn references_parse_like_distribution() {
        let sha = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
        for ok in [
            "test_com",
            "test.com:tag",
            "test.com:5000",
            "test.com/repo:tag",
            "test:5000/repo",
            "test:5000/repo:tag",
            "lowercase:Uppercase",
            "sub-dom1.foo.com/bar/baz/quux",
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            "b.gcr.io/test.example.com/my-app:test.example.com",
            "xn--n3h.com/myimage:xn--n3h.com",
            "foo_bar.com:8080",
            "foo/foo_bar.com:8080",
            "localhost:5000/foo",
            "Foo/bar",
            "docker.io/library/alpine:3.19",
            "ghcr.io/actions/actions-runner:latest",
            "a__b",
        ] {
            assert_eq!(parse_normalized(ok), Ok(()), "{ok}");
        }
        assert!(parse_normalized(&format!("test:5000/repo@sha256:{sha}")).is_ok());
        for (bad, err) in [
            ("", "invalid reference format"),
            (":justtag", "invalid reference format"),
            ("docker://alpine", "invalid reference format"),
            ("a___b", "invalid reference format"),
            (
                "repo@sha256:ffffffffffffffffffffffffffffffffff",
                "invalid checksum digest length",
            ),
            (
                "validname@invaliddigest:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                "unsupported digest algorithm",
            ),
            (
                "Uppercase:tag",
                "invalid reference format: repository name (library/Uppercase) must be lowercase",
            ),
            (
                "test:5000/Uppercase/lowercase:tag",
                "invalid reference format: repository name (Uppercase/lowercase) must be lowercase",
            ),
            ("aa/asdf$$^/aa", "invalid reference format"),
            ("alpine:", "invalid reference format"),
            ("alpine@sha256:abc", "invalid reference format"),
        ] {
            assert_eq!(parse_normalized(bad).err().as_deref(), Some(err), "{bad}");
        }
        assert_eq!(
            parse_normalized(sha).err().as_deref(),
            Some(
                format!(
                    "invalid repository name ({sha}), cannot specify 64-byte hexadecimal strings"
                )
                .as_str()
            )
        );
        assert!(parse_normalized(&format!("{}/x", "a".repeat(255))).is_err());
        assert_eq!(
            invalid_image_message("docker://x").as_deref(),
            Some(
                "Failed to apply default image tag \"docker://x\": couldn't parse image name \"docker://x\": invalid reference format"
            )
        );
    }
}
