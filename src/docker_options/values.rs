//! Values of single docker options (sizes, CPUs, GPUs, users, hosts, capabilities), read as docker reads them.

use std::net::IpAddr;

use super::{Gpus, HostEntry, User};

/// A size as docker's `RAMInBytes` reads it: a number, an optional space, then an optional
/// binary unit `k`, `m`, `g`, `t` or `p` (any case, optionally followed by `i` and/or `b`):
/// `8g`, `512m`, `1.5GiB`, `1048576`.
pub(crate) fn parse_size(value: &str) -> Result<u64, String> {
    const HINT: &str = "expected a size such as 512m or 8g (binary units b, k, m, g, t)";
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(HINT.into()),
    };
    let n: f64 = number.parse().map_err(|_| HINT.to_string())?;
    let bytes = n * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err("expected a size above 0".into());
    }
    Ok(bytes as u64)
}

/// A byte count as a Kubernetes quantity, in the largest binary unit that divides it (`8Gi`).
pub(crate) fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes % (1u64 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// `--cpus`: a decimal number of CPUs, in thousandths (Kubernetes' smallest unit).
pub(crate) fn parse_cpus(value: &str) -> Result<u64, String> {
    const HINT: &str = "expected a number of CPUs such as 2 or 0.5";
    let v = value.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return Err(HINT.into());
    }
    let (milli_digits, rest) = frac.split_at(frac.len().min(3));
    if rest.chars().any(|c| c != '0') {
        return Err("Kubernetes counts CPUs in thousandths; use at most 3 decimals".into());
    }
    let whole: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| HINT.to_string())?
    };
    let milli: u64 = format!("{milli_digits:0<3}")
        .parse()
        .map_err(|_| HINT.to_string())?;
    let total = whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(milli))
        .ok_or_else(|| HINT.to_string())?;
    if total == 0 {
        return Err("expected more than 0 CPUs".into());
    }
    Ok(total)
}

/// Thousandths of a CPU as a Kubernetes quantity (`4`, `1500m`).
pub(crate) fn format_cpus(milli: u64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// `--gpus`: `N`, `all`, or docker's CSV form (`count=N`, `driver=nvidia`, `capabilities=...`).
/// `device=` is refused: the device plugin, not the job, picks the GPUs on Kubernetes.
pub(crate) fn parse_gpus(value: &str) -> Result<Gpus, String> {
    let v = value.trim().trim_matches('"');
    let count = |c: &str| -> Result<Gpus, String> {
        if c.eq_ignore_ascii_case("all") {
            return Ok(Gpus::All);
        }
        match c.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Gpus::Count(n)),
            _ => Err("expected a number of GPUs above 0, or all".into()),
        }
    };
    if !v.contains('=') {
        return count(v);
    }
    let mut found = None;
    for part in v.split(',') {
        match part.split_once('=') {
            Some(("count", c)) => found = Some(count(c)?),
            Some(("driver", _)) | Some(("capabilities", _)) => {}
            Some(("device", _)) => {
                return Err(
                    "Kubernetes assigns GPUs itself; ask for a number of GPUs (--gpus 1)".into(),
                );
            }
            _ => return Err(format!("unknown GPU request field {part:?}; use --gpus N")),
        }
    }
    Ok(found.unwrap_or(Gpus::All))
}

/// `--user uid[:gid]`. Names are refused: Kubernetes runs as numeric ids and cannot look up
/// the image's `/etc/passwd`.
pub(crate) fn parse_user(value: &str) -> Result<User, String> {
    let (u, g) = match value.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (value, None),
    };
    let id = |s: &str| -> Result<i64, String> {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
            let hint = if s == "root" { " (root is 0)" } else { "" };
            return Err(format!(
                "Kubernetes needs numeric user and group ids (runAsUser/runAsGroup), not names{hint}; e.g. --user 1001:1001"
            ));
        }
        s.parse::<i64>()
            .ok()
            .filter(|n| *n <= i64::from(i32::MAX))
            .ok_or_else(|| "user and group ids must be below 2147483648".to_string())
    };
    Ok(User {
        uid: id(u)?,
        gid: g.map(id).transpose()?,
    })
}

/// `--add-host name:ip` (or `name=ip`, docker 25+; IPv6 in brackets or bare).
pub(crate) fn parse_add_host(value: &str) -> Result<HostEntry, String> {
    let (host, ip) = value
        .split_once('=')
        .or_else(|| value.split_once(':'))
        .ok_or("expected name:ip")?;
    if ip == "host-gateway" {
        return Err(
            "host-gateway has no Kubernetes equivalent; use the address of a Service or node"
                .into(),
        );
    }
    let bare = ip.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = bare
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    if let Some(problem) = crate::validate::dns1123_subdomain(host).first() {
        return Err(format!("host name {host:?}: {problem}"));
    }
    Ok(HostEntry {
        host: host.to_string(),
        ip: ip.to_string(),
    })
}

/// A capability as Kubernetes names it: upper case without `CAP_` (`net_admin` -> `NET_ADMIN`).
pub(crate) fn parse_capability(value: &str) -> Result<String, String> {
    let upper = value.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        return Err("expected a capability name such as NET_ADMIN".into());
    }
    Ok(name.to_string())
}

/// A boolean flag's `=value`, as Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary_like_docker() {
        assert_eq!(parse_size("8g"), Ok(8 << 30));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8gb"), Ok(8 << 30));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("8Gi"), Ok(8 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("512 m"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        for bad in ["", "g", "8x", "8gg", "-1g", "1.2.3g", "8 gb x"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("0"), Err("expected a size above 0".into()));
    }

    #[test]
    fn sizes_print_in_the_largest_unit() {
        assert_eq!(format_size(8 << 30), "8Gi");
        assert_eq!(format_size(3 << 29), "1536Mi");
        assert_eq!(format_size(64 << 10), "64Ki");
        assert_eq!(format_size(100), "100");
        assert_eq!(format_size(2 << 40), "2Ti");
    }

    #[test]
    fn cpus_in_thousandths() {
        assert_eq!(parse_cpus("4"), Ok(4000));
        assert_eq!(parse_cpus("1.5"), Ok(1500));
        assert_eq!(parse_cpus(".25"), Ok(250));
        assert_eq!(parse_cpus("0.001"), Ok(1));
        assert_eq!(parse_cpus("2.5000"), Ok(2500));
        assert!(parse_cpus("0.0005").is_err());
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus(".").is_err());
        assert!(parse_cpus("two").is_err());
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("1e3").is_err());
        assert_eq!(format_cpus(4000), "4");
        assert_eq!(format_cpus(1500), "1500m");
    }

    #[test]
    fn gpus_need_a_count() {
        assert_eq!(parse_gpus("1"), Ok(Gpus::Count(1)));
        assert_eq!(parse_gpus("all"), Ok(Gpus::All));
        assert_eq!(parse_gpus("count=2,driver=nvidia"), Ok(Gpus::Count(2)));
        assert_eq!(parse_gpus("\"capabilities=compute\""), Ok(Gpus::All));
        assert!(parse_gpus("0").is_err());
        assert!(parse_gpus("many").is_err());
        let e = parse_gpus("\"device=0,1\"").expect_err("devices");
        assert!(e.contains("Kubernetes assigns GPUs itself"), "{e}");
    }

    #[test]
    fn users_are_numeric() {
        assert_eq!(
            parse_user("1001:1001"),
            Ok(User {
                uid: 1001,
                gid: Some(1001)
            })
        );
        assert_eq!(parse_user("0"), Ok(User { uid: 0, gid: None }));
        let e = parse_user("runner").expect_err("name");
        assert!(
            e.starts_with("Kubernetes needs numeric user and group ids"),
            "{e}"
        );
        assert!(
            parse_user("root")
                .expect_err("name")
                .contains("(root is 0)")
        );
        assert!(parse_user("1001:docker").is_err());
        assert!(parse_user("1001:").is_err());
        assert!(parse_user("99999999999").is_err());
    }

    #[test]
    fn hosts_take_docker_forms() {
        let h = |host: &str, ip: &str| HostEntry {
            host: host.into(),
            ip: ip.into(),
        };
        assert_eq!(parse_add_host("db:10.0.0.5"), Ok(h("db", "10.0.0.5")));
        assert_eq!(parse_add_host("db=10.0.0.5"), Ok(h("db", "10.0.0.5")));
        assert_eq!(parse_add_host("v6:::1"), Ok(h("v6", "::1")));
        assert_eq!(parse_add_host("v6=[fe80::1]"), Ok(h("v6", "fe80::1")));
        assert!(parse_add_host("db").is_err());
        assert!(parse_add_host("db:nowhere").is_err());
        assert!(parse_add_host("Bad_Host:10.0.0.1").is_err());
        assert!(
            parse_add_host("host.docker.internal:host-gateway")
                .expect_err("gateway")
                .contains("no Kubernetes equivalent")
        );
    }

    #[test]
    fn capabilities_are_normalised() {
        assert_eq!(parse_capability("net_admin"), Ok("NET_ADMIN".into()));
        assert_eq!(parse_capability("CAP_SYS_PTRACE"), Ok("SYS_PTRACE".into()));
        assert_eq!(parse_capability("ALL"), Ok("ALL".into()));
        assert!(parse_capability("").is_err());
        assert!(parse_capability("NET ADMIN").is_err());
    }

    #[test]
    fn booleans_as_go_reads_them() {
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("yes").is_err());
    }
}
