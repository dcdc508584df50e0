//! docker's health-check options (`--health-cmd`, `--health-interval`...), resolved with docker's defaults into one check.

use std::time::Duration;

use super::OptionsError;

/// docker's defaults for a check given without them (`container.DefaultHealthcheck*` in moby).
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_RETRIES: u32 = 3;

/// The health options as given, before defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HealthOptions {
    pub cmd: Option<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    /// `--no-healthcheck`.
    pub disabled: bool,
}

/// One container's health check, with docker's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthCheck {
    /// Run as `/bin/sh -c <command>`, as docker runs a `--health-cmd` string (`CMD-SHELL`).
    pub command: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures, after the start period, that make the container unhealthy.
    pub retries: u32,
    /// Failures during this time do not count; a success counts at once.
    pub start_period: Duration,
}

impl HealthCheck {
    /// The longest docker would keep the container `starting` before calling it `unhealthy`:
    /// the start period, then `retries` checks each waiting up to an interval and a timeout.
    #[cfg(test)] // only the unit tests use it
    pub(crate) fn verdict_after(&self) -> Duration {
        self.start_period + (self.interval + self.timeout) * self.retries
    }

    /// `every 10s, 5s timeout, 5 retries` (plus `, 30s start period` when set).
    pub(crate) fn describe(&self) -> String {
        let mut s = format!(
            "every {}, {} timeout, {} {}",
            secs(self.interval),
            secs(self.timeout),
            self.retries,
            if self.retries == 1 {
                "retry"
            } else {
                "retries"
            }
        );
        if !self.start_period.is_zero() {
            s.push_str(&format!(", {} start period", secs(self.start_period)));
        }
        s
    }
}

/// `10s`, `1.5s`.
pub(crate) fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{s}s")
    }
}

impl HealthOptions {
    /// The `--health-*` flags given besides `--health-cmd`.
    fn tuning_flags(&self) -> impl Iterator<Item = &'static str> {
        [
            ("--health-interval", self.interval.is_some()),
            ("--health-timeout", self.timeout.is_some()),
            ("--health-retries", self.retries.is_some()),
            ("--health-start-period", self.start_period.is_some()),
            ("--health-start-interval", self.start_interval.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(f, _)| f)
    }

    /// The check these options define (`None`: no check), and warnings for what cannot be kept.
    /// docker's rules: `--no-healthcheck` conflicts with every `--health-*` option; a zero value
    /// means the default; tuning flags without `--health-cmd` tune the image's own HEALTHCHECK.
    pub(crate) fn resolve(&self) -> Result<(Option<HealthCheck>, Vec<String>), OptionsError> {
        let mut warnings = Vec::new();
        if self.disabled {
            if self.cmd.is_some() || self.tuning_flags().next().is_some() {
                return Err(OptionsError::Syntax(
                    "--no-healthcheck conflicts with --health-* options".into(),
                ));
            }
            return Ok((None, warnings));
        }
        let Some(command) = self.cmd.clone() else {
            let flags: Vec<&str> = self.tuning_flags().collect();
            if !flags.is_empty() {
                warnings.push(format!(
                    "{} ignored: without --health-cmd they tune the image's own HEALTHCHECK, which Kubernetes does not run; add --health-cmd",
                    flags.join(", ")
                ));
            }
            return Ok((None, warnings));
        };
        if command.trim().is_empty() {
            return Err(OptionsError::BadValue {
                flag: "--health-cmd".into(),
                value: command,
                reason: "the health check needs a command".into(),
            });
        }
        let or = |v: Option<Duration>, d: Duration| v.filter(|v| !v.is_zero()).unwrap_or(d);
        if self.start_interval.is_some() {
            warnings.push(
                "--health-start-interval ignored: a Kubernetes probe has one period, so the check runs every --health-interval from the start".into(),
            );
        }
        Ok((
            Some(HealthCheck {
                command,
                interval: or(self.interval, DEFAULT_INTERVAL),
                timeout: or(self.timeout, DEFAULT_TIMEOUT),
                retries: self.retries.filter(|r| *r > 0).unwrap_or(DEFAULT_RETRIES),
                start_period: self.start_period.unwrap_or_default(),
            }),
            warnings,
        ))
    }
}

/// A duration as Go's `time.ParseDuration` reads it (what docker's duration flags use):
/// decimal numbers each with a unit `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, e.g. `10s`, `1m30s`,
/// `1.5h`, `500ms`; `0` alone needs no unit. Negative values are refused, as docker refuses them.
pub(crate) fn parse_duration(value: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a duration such as 10s, 500ms or 1m30s";
    let mut rest = value.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.starts_with('-') {
        return Err("cannot be negative".into());
    }
    rest = rest.strip_prefix('+').unwrap_or(rest);
    if rest.is_empty() {
        return Err(HINT.into());
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        if number.is_empty() || number == "." {
            return Err(HINT.into());
        }
        let n: f64 = number.parse().map_err(|_| HINT.to_string())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration ({HINT})")),
            _ => return Err(format!("unknown unit {unit:?} in duration ({HINT})")),
        };
        nanos += n * scale;
        rest = tail;
    }
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err("the duration is too long".into());
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        let s = Duration::from_secs;
        assert_eq!(parse_duration("10s"), Ok(s(10)));
        assert_eq!(parse_duration("1m30s"), Ok(s(90)));
        assert_eq!(parse_duration("1.5h"), Ok(s(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2us"), Ok(Duration::from_micros(2)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("+5s"), Ok(s(5)));
        assert!(
            parse_duration("10")
                .expect_err("no unit")
                .starts_with("missing unit")
        );
        assert!(
            parse_duration("10d")
                .expect_err("no days")
                .starts_with("unknown unit \"d\"")
        );
        assert_eq!(parse_duration("-1s"), Err("cannot be negative".into()));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration(".s").is_err());
    }

    fn with_cmd(cmd: &str) -> HealthOptions {
        HealthOptions {
            cmd: Some(cmd.into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_dockers() {
        let (check, warnings) = with_cmd("pg_isready").resolve().expect("valid");
        let check = check.expect("a check");
        assert_eq!(
            (
                check.interval,
                check.timeout,
                check.retries,
                check.start_period
            ),
            (
                Duration::from_secs(30),
                Duration::from_secs(30),
                3,
                Duration::ZERO
            )
        );
        assert!(warnings.is_empty());
        assert_eq!(check.verdict_after(), Duration::from_secs(180));
        // Zero means the default, as in docker.
        let o = HealthOptions {
            interval: Some(Duration::ZERO),
            retries: Some(0),
            ..with_cmd("x")
        };
        let c = o.resolve().expect("valid").0.expect("check");
        assert_eq!((c.interval, c.retries), (Duration::from_secs(30), 3));
    }

    #[test]
    fn githubs_postgres_example() {
        let o = HealthOptions {
            interval: Some(Duration::from_secs(10)),
            timeout: Some(Duration::from_secs(5)),
            retries: Some(5),
            start_period: Some(Duration::from_secs(20)),
            ..with_cmd("pg_isready")
        };
        let c = o.resolve().expect("valid").0.expect("check");
        assert_eq!(c.verdict_after(), Duration::from_secs(20 + 5 * 15));
        assert_eq!(
            c.describe(),
            "every 10s, 5s timeout, 5 retries, 20s start period"
        );
    }

    #[test]
    fn no_healthcheck_and_tuning_alone_add_no_check() {
        let off = HealthOptions {
            disabled: true,
            ..Default::default()
        };
        assert_eq!(off.resolve(), Ok((None, Vec::new())));
        let clash = HealthOptions {
            disabled: true,
            ..with_cmd("true")
        };
        assert_eq!(
            clash.resolve().expect_err("conflict").to_string(),
            "--no-healthcheck conflicts with --health-* options"
        );
        let tuning = HealthOptions {
            retries: Some(2),
            ..Default::default()
        };
        let (check, warnings) = tuning.resolve().expect("valid");
        assert!(check.is_none());
        assert_eq!(
            warnings,
            [
                "--health-retries ignored: without --health-cmd they tune the image's own HEALTHCHECK, which Kubernetes does not run; add --health-cmd"
            ]
        );
        assert!(
            with_cmd("  ")
                .resolve()
                .expect_err("empty")
                .to_string()
                .contains("needs a command")
        );
    }
}
