//! Docker-style `portMappings` (`80`, `8080:80`, `8080:80/udp`) as container ports and context ports.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ContainerPort;

use super::BuildError;

/// One parsed mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortMapping {
    pub host_port: Option<i32>,
    pub container_port: i32,
    pub protocol: &'static str,
}

/// Parses `[host:]container[/tcp|udp|sctp]`.
pub(crate) fn parse_port_mapping(value: &str, field: &str) -> Result<PortMapping, BuildError> {
    let err = |reason: &str| BuildError::Port {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let (ports, protocol) = match value.trim().split_once('/') {
        None => (value.trim(), "TCP"),
        Some((p, proto)) => (
            p,
            match proto.to_ascii_lowercase().as_str() {
                "tcp" => "TCP",
                "udp" => "UDP",
                "sctp" => "SCTP",
                _ => return Err(err("protocol must be tcp, udp or sctp")),
            },
        ),
    };
    let parse = |p: &str| -> Result<i32, BuildError> {
        match p.parse::<i32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n),
            _ => Err(err("ports must be numbers from 1 to 65535")),
        }
    };
    // docker's splitParts: the container port after the last colon, the host port before it,
    // and everything before that is the address (so an IPv6 one keeps its colons: `::1:80:80`,
    // or bracketed, `[::1]:80:80`). An empty host port (`127.0.0.1::80`) lets docker pick one.
    let mut parts = ports.rsplitn(3, ':');
    let container = parts.next().unwrap_or_default();
    let host = parts.next();
    let ip = parts.next();
    if let Some(ip) = ip {
        let bare = ip
            .strip_prefix('[')
            .and_then(|v6| v6.strip_suffix(']'))
            .unwrap_or(ip);
        if bare.parse::<std::net::IpAddr>().is_err() {
            return Err(err(
                "expected [[ip:]host:]container[/protocol]; the address is not an IP address",
            ));
        }
    }
    // The address has no meaning in a pod: every container shares the pod's addresses.
    let host_port = match host {
        None => None,
        Some("") if ip.is_some() => None,
        Some(h) => Some(parse(h)?),
    };
    Ok(PortMapping {
        host_port,
        container_port: parse(container)?,
        protocol,
    })
}

/// Parses every mapping of a container (`field` names it in errors, e.g. `args.container.portMappings`).
pub(crate) fn parse_port_mappings(
    values: &[String],
    field: &str,
) -> Result<Vec<PortMapping>, BuildError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| parse_port_mapping(v, &format!("{field}[{i}]")))
        .collect()
}

pub(crate) fn container_ports(mappings: &[PortMapping]) -> Option<Vec<ContainerPort>> {
    if mappings.is_empty() {
        return None;
    }
    Some(
        mappings
            .iter()
            .map(|m| ContainerPort {
                container_port: m.container_port,
                host_port: m.host_port,
                protocol: Some(m.protocol.to_string()),
                ..Default::default()
            })
            .collect(),
    )
}

/// The runner's `ports` context: container port -> the port the job reaches it on. Without a
/// host port, the job container reaches a service on its own port (same pod network).
pub(crate) fn context_ports(mappings: &[PortMapping]) -> BTreeMap<String, String> {
    mappings
        .iter()
        .map(|m| {
            (
                m.container_port.to_string(),
                m.host_port.unwrap_or(m.container_port).to_string(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            parse_port_mapping("80", "f").expect("valid"),
            PortMapping {
                host_port: None,
                container_port: 80,
                protocol: "TCP"
            }
        );
        assert_eq!(
            parse_port_mapping("80:8080", "f").expect("valid"),
            PortMapping {
                host_port: Some(80),
                container_port: 8080,
                protocol: "TCP"
            }
        );
        assert_eq!(
            parse_port_mapping("8080:80/udp", "f").expect("valid"),
            PortMapping {
                host_port: Some(8080),
                container_port: 80,
                protocol: "UDP"
            }
        );
        assert_eq!(
            parse_port_mapping("127.0.0.1:5432:5432/TCP", "f").expect("valid"),
            PortMapping {
                host_port: Some(5432),
                container_port: 5432,
                protocol: "TCP"
            }
        );
    }

    #[test]
    fn bad_forms_name_field_and_value() {
        let e = parse_port_mapping("80:x", "args.container.portMappings[0]").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "args.container.portMappings[0]: invalid port mapping \"80:x\": ports must be numbers from 1 to 65535"
        );
        let e = parse_port_mapping("80/icmp", "f").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "f: invalid port mapping \"80/icmp\": protocol must be tcp, udp or sctp"
        );
        assert!(parse_port_mapping("0", "f").is_err());
        assert!(parse_port_mapping("70000", "f").is_err());
        assert!(parse_port_mapping("1:2:3:4", "f").is_err());
        assert!(parse_port_mapping("db:5432:5432", "f").is_err());
        assert!(parse_port_mapping(":5432", "f").is_err());
    }

    #[test]
    fn ipv6_addresses_are_read_as_docker_reads_them() {
        let want = PortMapping {
            host_port: Some(5432),
            container_port: 5432,
            protocol: "TCP",
        };
        for v in [
            "[::1]:5432:5432",
            "::1:5432:5432",
            "[fd00:10:96::a]:5432:5432/tcp",
            "0.0.0.0:5432:5432",
        ] {
            assert_eq!(parse_port_mapping(v, "f").expect(v), want, "{v}");
        }
        // An empty host port: docker picks one; the job reaches the service on its own port.
        assert_eq!(
            parse_port_mapping("[::]::6379", "f")
                .expect("valid")
                .host_port,
            None
        );
        assert_eq!(
            parse_port_mapping("127.0.0.1::6379", "f")
                .expect("valid")
                .host_port,
            None
        );
    }

    #[test]
    fn context_ports_are_strings() {
        let m = parse_port_mappings(&["80:8080".into(), "6379".into()], "f").expect("valid");
        let ctx = context_ports(&m);
        assert_eq!(ctx.get("8080").map(String::as_str), Some("80"));
        assert_eq!(ctx.get("6379").map(String::as_str), Some("6379"));
        let cp = container_ports(&m).expect("ports");
        assert_eq!(cp[0].container_port, 8080);
        assert_eq!(cp[0].host_port, Some(80));
        assert_eq!(cp[1].host_port, None);
    }
}
