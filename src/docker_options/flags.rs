//! docker create's flags (which take a value, which are switches) and the pflag rules that read them.

use super::health::parse_duration;
use super::values::{
    parse_add_host, parse_bool, parse_capability, parse_cpus, parse_gpus, parse_size, parse_user,
};
use super::words::split_words;
use super::{DockerOptions, JobOption, OptionsError};

/// `docker create` flags that take a value (long name, short name), as in the docker CLI.
const VALUE_FLAGS: &[(&str, Option<char>)] = &[
    ("add-host", None),
    ("annotation", None),
    ("attach", Some('a')),
    ("blkio-weight", None),
    ("blkio-weight-device", None),
    ("cap-add", None),
    ("cap-drop", None),
    ("cgroup-parent", None),
    ("cgroupns", None),
    ("cidfile", None),
    ("cpu-count", None),
    ("cpu-percent", None),
    ("cpu-period", None),
    ("cpu-quota", None),
    ("cpu-rt-period", None),
    ("cpu-rt-runtime", None),
    ("cpu-shares", Some('c')),
    ("cpus", None),
    ("cpuset-cpus", None),
    ("cpuset-mems", None),
    ("device", None),
    ("device-cgroup-rule", None),
    ("device-read-bps", None),
    ("device-read-iops", None),
    ("device-write-bps", None),
    ("device-write-iops", None),
    ("dns", None),
    ("dns-opt", None),
    ("dns-option", None),
    ("dns-search", None),
    ("domainname", None),
    ("entrypoint", None),
    ("env", Some('e')),
    ("env-file", None),
    ("expose", None),
    ("gpus", None),
    ("group-add", None),
    ("health-cmd", None),
    ("health-interval", None),
    ("health-retries", None),
    ("health-start-interval", None),
    ("health-start-period", None),
    ("health-timeout", None),
    ("hostname", Some('h')),
    ("io-maxbandwidth", None),
    ("io-maxiops", None),
    ("ip", None),
    ("ip6", None),
    ("ipc", None),
    ("isolation", None),
    ("kernel-memory", None),
    ("label", Some('l')),
    ("label-file", None),
    ("link", None),
    ("link-local-ip", None),
    ("log-driver", None),
    ("log-opt", None),
    ("mac-address", None),
    ("memory", Some('m')),
    ("memory-reservation", None),
    ("memory-swap", None),
    ("memory-swappiness", None),
    ("mount", None),
    ("name", None),
    ("net", None),
    ("net-alias", None),
    ("network", None),
    ("network-alias", None),
    ("oom-score-adj", None),
    ("pid", None),
    ("pids-limit", None),
    ("platform", None),
    ("publish", Some('p')),
    ("pull", None),
    ("restart", None),
    ("runtime", None),
    ("security-opt", None),
    ("shm-size", None),
    ("stop-signal", None),
    ("stop-timeout", None),
    ("storage-opt", None),
    ("sysctl", None),
    ("tmpfs", None),
    ("ulimit", None),
    ("user", Some('u')),
    ("userns", None),
    ("uts", None),
    ("volume", Some('v')),
    ("volume-driver", None),
    ("volumes-from", None),
    ("workdir", Some('w')),
];

/// `docker create` switches (`--rm`, `-it`...), which take no value unless written `--flag=false`.
const BOOL_FLAGS: &[(&str, Option<char>)] = &[
    ("disable-content-trust", None),
    ("help", None),
    ("init", None),
    ("interactive", Some('i')),
    ("no-healthcheck", None),
    ("oom-kill-disable", None),
    ("privileged", None),
    ("publish-all", Some('P')),
    ("quiet", Some('q')),
    ("read-only", None),
    ("rm", None),
    ("tty", Some('t')),
    ("use-api-socket", None),
];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Value,
    Switch,
}

fn by_long(name: &str) -> Option<(&'static str, Kind)> {
    let find = |table: &[(&'static str, Option<char>)], kind| {
        table
            .iter()
            .find(|(long, _)| *long == name)
            .map(|(long, _)| (*long, kind))
    };
    find(VALUE_FLAGS, Kind::Value).or_else(|| find(BOOL_FLAGS, Kind::Switch))
}

fn by_short(c: char) -> Option<(&'static str, Kind)> {
    let find = |table: &[(&'static str, Option<char>)], kind| {
        table
            .iter()
            .find(|(_, short)| *short == Some(c))
            .map(|(long, _)| (*long, kind))
    };
    find(VALUE_FLAGS, Kind::Value).or_else(|| find(BOOL_FLAGS, Kind::Switch))
}

/// Parses a `createOptions` string as `docker create` would read it (shell words, then
/// `--flag value`, `--flag=value`, `-f value`, `-fvalue`, `-f=value`, `-it`).
pub(crate) fn parse_options(options: &str) -> Result<DockerOptions, OptionsError> {
    let words = split_words(options)?;
    let mut opts = DockerOptions::default();
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        i += 1;
        if let Some(long) = word.strip_prefix("--") {
            if long.is_empty() {
                return match words.get(i) {
                    Some(arg) => Err(OptionsError::Positional { arg: arg.clone() }),
                    None => Ok(opts),
                };
            }
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let Some((name, kind)) = by_long(name) else {
                return Err(OptionsError::UnknownFlag {
                    flag: format!("--{name}"),
                });
            };
            let value = match (kind, inline) {
                (_, Some(v)) => Some(v),
                (Kind::Switch, None) => None,
                (Kind::Value, None) => {
                    let v = words.get(i).cloned().ok_or(OptionsError::MissingValue {
                        flag: format!("--{name}"),
                    })?;
                    i += 1;
                    Some(v)
                }
            };
            set(&mut opts, name, kind, value)?;
        } else if let Some(shorts) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            // pflag: switches combine (`-it`); a value flag takes the rest of the word
            // (`-m8g`, `-m=8g`) or the next word.
            for (pos, c) in shorts.char_indices() {
                let Some((name, kind)) = by_short(c) else {
                    return Err(OptionsError::UnknownFlag {
                        flag: format!("-{c}"),
                    });
                };
                if kind == Kind::Switch {
                    set(&mut opts, name, kind, None)?;
                    continue;
                }
                let rest = &shorts[pos + c.len_utf8()..];
                let value = if rest.is_empty() {
                    let v = words.get(i).cloned().ok_or(OptionsError::MissingValue {
                        flag: format!("-{c}"),
                    })?;
                    i += 1;
                    v
                } else {
                    rest.strip_prefix('=').unwrap_or(rest).to_string()
                };
                set(&mut opts, name, kind, Some(value))?;
                break;
            }
        } else {
            return Err(OptionsError::Positional { arg: word.clone() });
        }
    }
    Ok(opts)
}

/// One flag as given: its name (`--memory`) and value (`None` for a switch written bare).
struct Given {
    flag: String,
    value: Option<String>,
}

impl Given {
    fn text(&self) -> &str {
        self.value.as_deref().unwrap_or_default()
    }

    fn bad(&self, reason: impl Into<String>) -> OptionsError {
        OptionsError::BadValue {
            flag: self.flag.clone(),
            value: self.text().to_string(),
            reason: reason.into(),
        }
    }

    /// The value read by `parse`; its complaint becomes the flag's.
    fn parsed<T>(&self, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, OptionsError> {
        parse(self.text()).map_err(|r| self.bad(r))
    }

    /// A switch's state: on when bare, else as written (`--privileged=false`).
    fn on(&self) -> Result<bool, OptionsError> {
        match &self.value {
            None => Ok(true),
            Some(v) => parse_bool(v).map_err(|r| self.bad(r)),
        }
    }
}

/// Records one flag's value.
fn set(
    opts: &mut DockerOptions,
    name: &'static str,
    kind: Kind,
    value: Option<String>,
) -> Result<(), OptionsError> {
    let given = Given {
        flag: format!("--{name}"),
        value,
    };
    if let Some(option) = JobOption::from_name(name) {
        return set_option(opts, option, &given);
    }
    let health = &mut opts.health;
    match name {
        "no-healthcheck" => health.disabled = given.on()?,
        "health-interval" => health.interval = Some(given.parsed(parse_duration)?),
        "health-timeout" => health.timeout = Some(given.parsed(parse_duration)?),
        "health-start-period" => health.start_period = Some(given.parsed(parse_duration)?),
        "health-start-interval" => health.start_interval = Some(given.parsed(parse_duration)?),
        "health-retries" => {
            let n: i64 = given
                .text()
                .trim()
                .parse()
                .map_err(|_| given.bad("expected a whole number of retries"))?;
            health.retries = Some(u32::try_from(n).map_err(|_| given.bad("cannot be negative"))?);
        }
        _ => {
            let on = kind == Kind::Value || given.on()?;
            if on && !opts.no_meaning.contains(&given.flag) {
                opts.no_meaning.push(given.flag);
            }
        }
    }
    Ok(())
}

/// Records the value of an option that changes the pod.
fn set_option(
    opts: &mut DockerOptions,
    option: JobOption,
    given: &Given,
) -> Result<(), OptionsError> {
    let v = given.text();
    match option {
        JobOption::Cpus => opts.cpus_milli = Some(given.parsed(parse_cpus)?),
        JobOption::Memory => opts.memory = Some(given.parsed(parse_size)?),
        JobOption::MemoryReservation => opts.memory_reservation = Some(given.parsed(parse_size)?),
        JobOption::ShmSize => opts.shm_size = Some(given.parsed(parse_size)?),
        JobOption::Gpus => opts.gpus = Some(given.parsed(parse_gpus)?),
        JobOption::User => opts.user = Some(given.parsed(parse_user)?),
        JobOption::Env => {
            let (key, val) = match v.split_once('=') {
                Some((k, val)) => (k.to_string(), Some(val.to_string())),
                None => (v.to_string(), None),
            };
            if let Some(why) = crate::validate::env_var_name(&key).into_iter().next() {
                return Err(given.bad(format!("invalid variable name ({why})")));
            }
            opts.env.push((key, val));
        }
        JobOption::Workdir => {
            if !v.starts_with('/') {
                return Err(given.bad("the working directory must be an absolute path"));
            }
            opts.workdir = Some(v.to_string());
        }
        JobOption::Hostname => {
            if let Some(problem) = crate::validate::dns1123_label(v).first() {
                return Err(given.bad(format!("not a valid Kubernetes host name: {problem}")));
            }
            opts.hostname = Some(v.to_string());
        }
        JobOption::AddHost => opts.add_hosts.push(given.parsed(parse_add_host)?),
        JobOption::Privileged => opts.privileged = given.on()?,
        JobOption::CapAdd => opts.cap_add.push(given.parsed(parse_capability)?),
        JobOption::CapDrop => opts.cap_drop.push(given.parsed(parse_capability)?),
        JobOption::Ulimit => {
            if !v.contains('=') {
                return Err(given.bad("expected name=soft[:hard]"));
            }
            opts.ulimits.push(v.to_string());
        }
        JobOption::HealthCmd => opts.health.cmd = Some(v.to_string()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker_options::{Gpus, HostEntry, User};

    fn ok(s: &str) -> DockerOptions {
        parse_options(s).expect("valid options")
    }

    fn err(s: &str) -> String {
        parse_options(s).expect_err("refused").to_string()
    }

    fn in_use(s: &str) -> Vec<&'static str> {
        ok(s).in_use().into_iter().map(JobOption::name).collect()
    }

    #[test]
    fn every_job_option_is_a_docker_flag_of_its_kind() {
        for o in JobOption::ALL {
            let want = if *o == JobOption::Privileged {
                Kind::Switch
            } else {
                Kind::Value
            };
            assert!(
                by_long(o.name()) == Some((o.name(), want)),
                "{} missing from the flag tables or of the wrong kind",
                o.name()
            );
        }
    }

    #[test]
    fn the_issue_example() {
        let o = ok("--cpus 4 --memory 8g --shm-size 2g --gpus 1 --user 1001:1001");
        assert_eq!(o.cpus_milli, Some(4000));
        assert_eq!(o.memory, Some(8 << 30));
        assert_eq!(o.shm_size, Some(2 << 30));
        assert_eq!(o.gpus, Some(Gpus::Count(1)));
        assert_eq!(
            o.user,
            Some(User {
                uid: 1001,
                gid: Some(1001)
            })
        );
        assert_eq!(
            in_use("--cpus 4 --memory 8g --shm-size 2g --gpus 1 --user 1001:1001"),
            ["cpus", "memory", "shm-size", "gpus", "user"]
        );
        assert!(o.no_meaning.is_empty());
    }

    #[test]
    fn every_value_form_reads_the_same() {
        for s in [
            "--memory 8g",
            "--memory=8g",
            "-m 8g",
            "-m8g",
            "-m=8g",
            "'--memory' \"8g\"",
        ] {
            assert_eq!(ok(s).memory, Some(8 << 30), "{s}");
        }
        assert_eq!(
            ok("-u 1001").user,
            Some(User {
                uid: 1001,
                gid: None
            })
        );
        assert_eq!(ok("-w /src").workdir.as_deref(), Some("/src"));
        assert_eq!(ok("-h box").hostname.as_deref(), Some("box"));
    }

    #[test]
    fn later_values_win_and_lists_accumulate() {
        let o = ok(
            "--cpus 1 --cpus 2 -e A=1 --env B= -e C --add-host a:10.0.0.1 --add-host=b=10.0.0.2",
        );
        assert_eq!(o.cpus_milli, Some(2000));
        assert_eq!(
            o.env,
            vec![
                ("A".to_string(), Some("1".to_string())),
                ("B".to_string(), Some(String::new())),
                ("C".to_string(), None)
            ]
        );
        assert_eq!(
            o.add_hosts,
            vec![
                HostEntry {
                    host: "a".into(),
                    ip: "10.0.0.1".into()
                },
                HostEntry {
                    host: "b".into(),
                    ip: "10.0.0.2".into()
                }
            ]
        );
    }

    #[test]
    fn quoted_values_keep_their_blanks() {
        let o = ok(r#"-e "GREETING=hello world" --env='X=a "b"'"#);
        assert_eq!(o.env[0].1.as_deref(), Some("hello world"));
        assert_eq!(o.env[1].1.as_deref(), Some(r#"a "b""#));
    }

    #[test]
    fn switches_combine_and_take_explicit_values() {
        let o = ok("-it --rm --privileged");
        assert!(o.privileged);
        assert_eq!(o.no_meaning, ["--interactive", "--tty", "--rm"]);
        assert!(!ok("--privileged=false").privileged);
        assert!(ok("--privileged=true").privileged);
        // A switch followed by a word that is not a flag: the word is not its value.
        assert_eq!(
            err("--privileged true"),
            "unexpected argument \"true\": options are flags only (the workflow sets the image and command)"
        );
        assert_eq!(
            err("--privileged=maybe"),
            "--privileged \"maybe\": expected true or false"
        );
        // -ite VAR: switches, then a value flag taking the next word.
        let o = ok("-ite A=1");
        assert_eq!(o.env, vec![("A".to_string(), Some("1".to_string()))]);
        assert_eq!(ok("-teA=1").env[0].0, "A");
    }

    #[test]
    fn capabilities_and_ulimits() {
        let o = ok(
            "--cap-add net_admin --cap-add CAP_SYS_PTRACE --cap-drop ALL --ulimit nofile=1024:2048",
        );
        assert_eq!(o.cap_add, ["NET_ADMIN", "SYS_PTRACE"]);
        assert_eq!(o.cap_drop, ["ALL"]);
        assert_eq!(o.ulimits, ["nofile=1024:2048"]);
        assert_eq!(
            in_use("--cap-add net_admin --cap-drop ALL --ulimit nofile=1024:2048"),
            ["cap-add", "cap-drop", "ulimit"]
        );
        assert_eq!(
            in_use("--cap-add X --privileged"),
            ["privileged", "cap-add"]
        );
        assert_eq!(
            err("--ulimit nofile"),
            "--ulimit \"nofile\": expected name=soft[:hard]"
        );
    }

    #[test]
    fn flags_without_kubernetes_meaning_are_listed_once() {
        let o = ok(
            "--network host --net=bridge --init --label a=b -l c=d --network-alias x --stop-signal TERM",
        );
        assert_eq!(
            o.no_meaning,
            [
                "--network",
                "--net",
                "--init",
                "--label",
                "--network-alias",
                "--stop-signal"
            ]
        );
        assert!(o.in_use().is_empty());
    }

    #[test]
    fn values_may_start_with_a_dash() {
        // pflag takes the next word as the value, whatever it looks like.
        assert_eq!(
            ok("--health-cmd --foo").health.cmd.as_deref(),
            Some("--foo")
        );
    }

    #[test]
    fn health_options_are_typed() {
        let o = ok(
            "--health-cmd pg_isready --health-interval 10s --health-timeout 5s --health-retries 5 --health-start-period=1m",
        );
        let h = &o.health;
        assert_eq!(h.cmd.as_deref(), Some("pg_isready"));
        assert_eq!(h.interval, Some(std::time::Duration::from_secs(10)));
        assert_eq!(h.timeout, Some(std::time::Duration::from_secs(5)));
        assert_eq!(h.retries, Some(5));
        assert_eq!(h.start_period, Some(std::time::Duration::from_secs(60)));
        assert_eq!(
            in_use("--health-cmd true --health-retries 5"),
            ["health-cmd"]
        );
        assert!(o.no_meaning.is_empty());
        assert_eq!(
            ok(r#"--health-cmd "redis-cli ping""#).health.cmd.as_deref(),
            Some("redis-cli ping")
        );
        assert!(ok("--no-healthcheck").health.disabled);
        assert!(ok("--no-healthcheck").in_use().is_empty());
        assert_eq!(
            err("--health-interval 10"),
            "--health-interval \"10\": missing unit in duration (expected a duration such as 10s, 500ms or 1m30s)"
        );
        assert_eq!(
            err("--health-retries -1"),
            "--health-retries \"-1\": cannot be negative"
        );
        assert_eq!(
            err("--health-timeout -5s"),
            "--health-timeout \"-5s\": cannot be negative"
        );
    }

    #[test]
    fn mistakes_are_one_clear_line() {
        assert_eq!(
            err("--cpu 4"),
            "unknown docker option --cpu: docker would refuse it too; remove it from the job's options"
        );
        assert_eq!(
            err("-z"),
            "unknown docker option -z: docker would refuse it too; remove it from the job's options"
        );
        assert_eq!(err("--memory"), "--memory needs a value");
        assert_eq!(err("-m"), "-m needs a value");
        assert_eq!(
            err("--cpus 4 ubuntu"),
            "unexpected argument \"ubuntu\": options are flags only (the workflow sets the image and command)"
        );
        assert_eq!(
            err("--cpus lots"),
            "--cpus \"lots\": expected a number of CPUs such as 2 or 0.5"
        );
        assert_eq!(
            err("-e =2"),
            "--env \"=2\": invalid variable name (environment variable name must be non-empty)"
        );
        assert_eq!(
            err("-w src"),
            "--workdir \"src\": the working directory must be an absolute path"
        );
        assert!(
            err("--hostname My_Box")
                .starts_with("--hostname \"My_Box\": not a valid Kubernetes host name")
        );
        assert_eq!(err("-e 'A=1"), "a ' quote is never closed");
        assert_eq!(
            err("--user runner"),
            "--user \"runner\": Kubernetes needs numeric user and group ids (runAsUser/runAsGroup), not names; e.g. --user 1001:1001"
        );
    }

    #[test]
    fn empty_and_end_of_options() {
        assert_eq!(ok(""), DockerOptions::default());
        assert_eq!(ok("--cpus 1 --").cpus_milli, Some(1000));
        assert!(parse_options("-- x").is_err());
        assert!(parse_options("-").is_err());
    }
}
