//! Names of the objects the hook creates: valid, at most 63 characters, unique where they must be.

use rand::Rng;

use crate::validate::{DNS1123_LABEL_MAX, to_dns1123_label, truncate_label};

const WORKFLOW_SUFFIX: &str = "-workflow";

/// `base` cut to at most `room` characters so that distinct bases never meet: unchanged when it
/// fits, else its first characters and `-` and a hash of the whole (ARC's runner names differ
/// only at their end, `<scale set>-<5>-runner-<5>`, so a plain cut would merge them).
fn fit(base: &str, room: usize) -> String {
    if base.len() <= room {
        return base.to_string();
    }
    let hash = stable_suffix(base);
    let head = truncate_label(base, room.saturating_sub(hash.len() + 1));
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// `<runner pod>-workflow`, the runner part fitted so the whole is a valid 63-character label.
pub fn job_pod_name(runner_pod: &str) -> String {
    let base = fit(runner_pod, DNS1123_LABEL_MAX - WORKFLOW_SUFFIX.len());
    format!("{base}{WORKFLOW_SUFFIX}")
}

/// `<runner pod>-<kind>-<suffix>` (kind `step` or `secret`), at most 63 characters.
pub fn runner_object_name(runner_pod: &str, kind: &str, suffix: &str) -> String {
    let tail = format!("-{kind}-{suffix}");
    let base = fit(runner_pod, DNS1123_LABEL_MAX.saturating_sub(tail.len()));
    format!("{base}{tail}")
}

/// The `runner-pod` label's value: the runner pod's name when it fits a label value (63
/// characters), else fitted with a hash of the whole name. The full name is kept in the
/// [`RUNNER_POD_ANNOTATION`](super::RUNNER_POD_ANNOTATION) annotation.
pub fn runner_label_value(runner_pod: &str) -> String {
    fit(runner_pod, DNS1123_LABEL_MAX)
}

/// Eight random lowercase alphanumerics, like upstream's suffixes.
pub(crate) fn random_suffix() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// A deterministic eight-character suffix derived from `seed` (for `render` and golden files).
pub(crate) fn stable_suffix(seed: &str) -> String {
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|i| CHARS[((h >> (i * 8)) % CHARS.len() as u64) as usize] as char)
        .collect()
}

/// Upstream's service container name, derived from the image: `ghcr.io/x/redis:7` -> `redis`.
/// Templates written for upstream address services by it (`$redis`).
pub(crate) fn image_derived_name(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let no_digest = last.split('@').next().unwrap_or(last);
    no_digest.split(':').next().unwrap_or(no_digest).to_string()
}

/// Container names for the job's services: each one's image-derived name (upstream's rule; the
/// runner sends no service key) made a valid DNS-1123 label, unique among themselves and
/// distinct from `job`.
pub(crate) fn service_container_names<'a>(
    images: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut taken: Vec<String> = vec![super::JOB_CONTAINER_NAME.to_string()];
    let mut out = Vec::new();
    for image in images {
        let raw = image_derived_name(image);
        let base = to_dns1123_label(&raw, DNS1123_LABEL_MAX, "service");
        let mut name = base.clone();
        let mut n = 1;
        while taken.contains(&name) {
            let tail = format!("-{n}");
            name = format!(
                "{}{tail}",
                truncate_label(&base, DNS1123_LABEL_MAX - tail.len())
            );
            n += 1;
        }
        taken.push(name.clone());
        out.push(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::dns1123_label;

    #[test]
    fn long_runner_names_that_share_a_prefix_never_share_objects() {
        // ARC: <scale set>-<5>-runner-<5>; a 40-character scale-set name.
        let set = "gpu-inference-large-memory-nightly-build";
        let a = format!("{set}-x7k2p-runner-abcde");
        let b = format!("{set}-x7k2p-runner-fghij");
        assert_ne!(job_pod_name(&a), job_pod_name(&b));
        assert_ne!(
            runner_object_name(&a, "secret", "12345678"),
            runner_object_name(&b, "secret", "12345678")
        );
        assert_ne!(runner_label_value(&a), runner_label_value(&b));
        for n in [
            job_pod_name(&a),
            runner_object_name(&b, "step", "12345678"),
            runner_label_value(&"r".repeat(200)),
        ] {
            assert!(n.len() <= 63, "{n}");
            assert!(dns1123_label(&n).is_empty(), "{n}");
        }
        assert_eq!(
            runner_label_value("arc-runner"),
            "arc-runner",
            "short names unchanged"
        );
    }

    #[test]
    fn job_pod_name_is_truncated_and_valid() {
        assert_eq!(
            job_pod_name("runner-x7k2p-runner-abcde"),
            "runner-x7k2p-runner-abcde-workflow"
        );
        let long = "a".repeat(70);
        let name = job_pod_name(&long);
        assert_eq!(name.len(), 63);
        assert!(dns1123_label(&name).is_empty());
        // Truncation exposing a '-' must not produce "--<hash>".
        let tricky = format!("{}-bbbbbbbbbbbbbb", "a".repeat(44));
        let name = job_pod_name(&tricky);
        assert_eq!(
            name,
            format!("{}-{}-workflow", "a".repeat(44), stable_suffix(&tricky))
        );
        assert!(dns1123_label(&name).is_empty());
    }

    #[test]
    fn step_and_secret_names_fit() {
        let n = runner_object_name(&"r".repeat(80), "step", "abcd1234");
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("-step-abcd1234"));
        assert!(dns1123_label(&n).is_empty());
        assert_eq!(
            runner_object_name("arc-runner", "secret", "x1y2z3w4"),
            "arc-runner-secret-x1y2z3w4"
        );
    }

    #[test]
    fn suffixes() {
        let s = random_suffix();
        assert_eq!(s.len(), 8);
        assert!(
            s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(stable_suffix("a"), stable_suffix("a"));
        assert_ne!(stable_suffix("a"), stable_suffix("b"));
    }

    #[test]
    fn image_names() {
        assert_eq!(image_derived_name("redis:7"), "redis");
        assert_eq!(
            image_derived_name("registry.example.internal:5000/team/postgres:16-alpine"),
            "postgres"
        );
        assert_eq!(image_derived_name("nginx@sha256:abc"), "nginx");
    }

    #[test]
    fn service_names_are_valid_and_unique() {
        let long = format!("registry.example.internal/{}:1", "s".repeat(70));
        let names = service_container_names([
            "redis:7",
            "Redis:6",
            "registry.example.internal/job",
            "my_db.Primary:16",
            "registry.example.internal/x/memcached:1",
            "___",
            &long,
            &long,
        ]);
        assert_eq!(
            names[..6],
            [
                "redis",
                "redis-1",
                "job-1",
                "my-db-primary",
                "memcached",
                "service"
            ]
        );
        assert_eq!(names[6], "s".repeat(63));
        assert_eq!(names[7], format!("{}-1", "s".repeat(61)));
        for n in &names {
            assert!(dns1123_label(n).is_empty(), "{n}");
        }
    }
}
