//! Kubernetes resource quantities (`500m`, `2Gi`, `1e3`): validation and conversion to base
//! units, for the hook (comparing a template's request with a job's limit) and the simulator's
//! admission and scheduling alike.

/// The API server's message for a malformed quantity (the simulator answers with it).
#[cfg(feature = "sim")] // only the simulator answers with it
pub(crate) const QUANTITY_FMT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Parses a quantity into base units (cores, bytes, items); `None` when malformed.
pub(crate) fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num.chars().skip(1).any(|c| c == '+' || c == '-') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1Gi"), Some(1073741824.0));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("16Gi"), Some(16.0 * 1024f64.powi(3)));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("abc"), None);
        assert_eq!(parse("1Gb"), None);
        assert_eq!(parse(""), None);
    }
}
