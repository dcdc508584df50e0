//! The runner's container-hook protocol: the stdin envelope, each command's args, and the prepare_job response.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why the runner's input could not be understood. Displays as one line naming the field path.
#[derive(Debug, thiserror::Error)]
#[error("invalid hook input: {path}: {reason}")]
pub(crate) struct InputError {
    pub path: String,
    pub reason: String,
}

impl InputError {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The four commands the runner sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CommandName {
    PrepareJob,
    RunScriptStep,
    RunContainerStep,
    CleanupJob,
}

impl CommandName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PrepareJob => "prepare_job",
            Self::RunScriptStep => "run_script_step",
            Self::RunContainerStep => "run_container_step",
            Self::CleanupJob => "cleanup_job",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "prepare_job" => Self::PrepareJob,
            "run_script_step" => Self::RunScriptStep,
            "run_container_step" => Self::RunContainerStep,
            "cleanup_job" => Self::CleanupJob,
            _ => return None,
        })
    }
}

/// One invocation of the hook, as read from stdin.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub response_file: Option<PathBuf>,
    pub command: Command,
    /// prepare_job's `state`, handed back verbatim by the runner in every later command.
    pub state: Option<JobState>,
}

/// A command with its typed args.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    PrepareJob(PrepareJobArgs),
    RunScriptStep(RunScriptStepArgs),
    RunContainerStep(RunContainerStepArgs),
    CleanupJob,
}

impl Command {
    /// The secret values the input carries (registry passwords), for the job log's masks.
    pub(crate) fn secrets(&self) -> Vec<&str> {
        let registries: Vec<&Registry> = match self {
            Self::PrepareJob(a) => a
                .container
                .iter()
                .chain(&a.services)
                .filter_map(|c| c.registry.as_ref())
                .collect(),
            Self::RunContainerStep(a) => a.registry.iter().collect(),
            Self::RunScriptStep(_) | Self::CleanupJob => Vec::new(),
        };
        registries
            .into_iter()
            .filter_map(|r| r.password.as_deref())
            .collect()
    }

    pub(crate) fn name(&self) -> CommandName {
        match self {
            Self::PrepareJob(_) => CommandName::PrepareJob,
            Self::RunScriptStep(_) => CommandName::RunScriptStep,
            Self::RunContainerStep(_) => CommandName::RunContainerStep,
            Self::CleanupJob => CommandName::CleanupJob,
        }
    }
}

/// What arc-hook keeps between the commands of one job (round-tripped through the runner).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobState {
    /// Name of the workflow pod (upstream's field name, kept for compatibility).
    #[serde(default, deserialize_with = "null_default")]
    pub job_pod: String,
    /// Namespace the pod lives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Whether the job pod uses an emptyDir work volume the hook fills itself (no-volume mode).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_volume: bool,
    /// The job's pull secret, which cleanup_job deletes by this name (the Role need not let it
    /// list secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_secret: Option<String>,
}

/// A volume mount the runner asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Mount {
    /// `None` for a volume without a source (`volumes: [/cache]`): Docker's anonymous volume.
    #[serde(default)]
    pub source_volume_path: Option<String>,
    pub target_volume_path: String,
    #[serde(default, deserialize_with = "null_default")]
    pub read_only: bool,
}

/// Registry credentials for pulling the image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Registry {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub server_url: Option<String>,
}

impl Registry {
    /// Credentials are usable only with both a user name and a password.
    pub(crate) fn has_credentials(&self) -> bool {
        matches!((&self.username, &self.password), (Some(u), Some(p)) if !u.is_empty() && !p.is_empty())
    }
}

/// A job or service container definition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerDefinition {
    pub image: String,
    #[serde(default)]
    pub working_directory: Option<String>,
    #[serde(default)]
    pub create_options: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub environment_variables: BTreeMap<String, String>,
    #[serde(default)]
    pub entry_point: Option<String>,
    /// The arguments the process receives: the runner's tokens decoded with Docker mode's rules
    /// ([`crate::runner_args`]).
    #[serde(default, deserialize_with = "runner_arguments")]
    pub entry_point_args: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub user_mount_volumes: Vec<Mount>,
    #[serde(default, deserialize_with = "null_default")]
    pub system_mount_volumes: Vec<Mount>,
    #[serde(default)]
    pub registry: Option<Registry>,
    #[serde(default, deserialize_with = "null_default")]
    pub port_mappings: Vec<String>,
}

/// prepare_job's args.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PrepareJobArgs {
    #[serde(default)]
    pub container: Option<ContainerDefinition>,
    #[serde(default, deserialize_with = "null_default")]
    pub services: Vec<ContainerDefinition>,
}

/// run_script_step's args.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunScriptStepArgs {
    pub entry_point: String,
    /// The arguments the process receives: the runner's tokens decoded with Docker mode's rules
    /// ([`crate::runner_args`]).
    #[serde(default, deserialize_with = "runner_arguments")]
    pub entry_point_args: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub environment_variables: BTreeMap<String, String>,
    /// Directories to put before PATH, first wins. Old runners (<= 2.293) sent one string.
    #[serde(default, deserialize_with = "string_or_list")]
    pub prepend_path: Vec<String>,
    #[serde(default)]
    pub working_directory: Option<String>,
}

/// run_container_step's args.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunContainerStepArgs {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub dockerfile: Option<String>,
    #[serde(default)]
    pub entry_point: Option<String>,
    /// The arguments the process receives: the runner's tokens decoded with Docker mode's rules
    /// ([`crate::runner_args`]).
    #[serde(default, deserialize_with = "runner_arguments")]
    pub entry_point_args: Vec<String>,
    #[serde(default)]
    pub working_directory: Option<String>,
    #[serde(default)]
    pub create_options: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub environment_variables: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "string_or_list")]
    pub prepend_path: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub(crate) user_mount_volumes: Vec<Mount>,
    #[serde(default, deserialize_with = "null_default")]
    pub(crate) system_mount_volumes: Vec<Mount>,
    #[serde(default)]
    pub(crate) registry: Option<Registry>,
    #[serde(default, deserialize_with = "null_default")]
    pub port_mappings: Vec<String>,
}

/// prepare_job's response, written to `responseFile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PrepareJobResponse {
    pub state: JobState,
    pub context: ResponseContext,
    pub is_alpine: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResponseContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContextEntry>,
    #[serde(default)]
    pub services: Vec<ContextEntry>,
}

/// One container of the job as the runner's `job.container` / `job.services.<id>` context sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ContextEntry {
    pub image: String,
    /// container port -> port reachable from the job (string to string, as the runner reads it).
    pub ports: BTreeMap<String, String>,
}

/// Parses the runner's stdin. Every error names the offending field.
pub(crate) fn parse_envelope(input: &str) -> Result<Envelope, InputError> {
    parse_envelope_from(input, "stdin")
}

/// Parses a runner input read from `source` (`stdin`, or the file `render` was given), which
/// names the input when it is not a JSON object at all.
pub(crate) fn parse_envelope_from(input: &str, source: &str) -> Result<Envelope, InputError> {
    let raw: Value = serde_json::from_str(input)
        .map_err(|e| InputError::new(source, format!("not valid JSON ({e})")))?;
    let obj = raw
        .as_object()
        .ok_or_else(|| InputError::new(source, "expected a JSON object"))?;

    let command = match obj.get("command") {
        None | Some(Value::Null) => return Err(InputError::new("command", "missing")),
        Some(Value::String(s)) => CommandName::parse(s).ok_or_else(|| {
            InputError::new(
                "command",
                format!(
                    "unknown command {s:?} (expected prepare_job, run_script_step, run_container_step or cleanup_job)"
                ),
            )
        })?,
        Some(other) => {
            return Err(InputError::new("command", format!("expected a string, got {}", kind(other))));
        }
    };

    let response_file = match obj.get("responseFile") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(PathBuf::from(s)),
        Some(other) => {
            return Err(InputError::new(
                "responseFile",
                format!("expected a string, got {}", kind(other)),
            ));
        }
    };

    let state = match obj.get("state") {
        None | Some(Value::Null) => None,
        Some(v) => Some(typed::<JobState>("state", v)?),
    };

    let args = obj.get("args").filter(|v| !v.is_null());
    let command = match command {
        CommandName::PrepareJob => {
            Command::PrepareJob(typed("args", args.unwrap_or(&Value::Null))?)
        }
        CommandName::RunScriptStep => Command::RunScriptStep(typed("args", required_args(args)?)?),
        CommandName::RunContainerStep => {
            let a: RunContainerStepArgs = typed("args", required_args(args)?)?;
            match (&a.image, &a.dockerfile) {
                (None, None) => {
                    return Err(InputError::new(
                        "args.image",
                        "missing (a container step needs image or dockerfile)",
                    ));
                }
                (Some(i), _) if i.is_empty() => return Err(InputError::new("args.image", "empty")),
                _ => {}
            }
            Command::RunContainerStep(a)
        }
        CommandName::CleanupJob => Command::CleanupJob,
    };

    if let Command::PrepareJob(a) = &command {
        validate_prepare_args(a)?;
    }
    check_process_strings(&command)?;
    if let Some(s) = &state
        && !s.job_pod.is_empty()
        && let Some(why) = crate::validate::dns1123_subdomain(&s.job_pod)
            .into_iter()
            .next()
    {
        // It goes into request URLs: nothing but a valid object name may.
        return Err(InputError::new(
            "state.jobPod",
            format!("{:?} is not a pod name: {why}", s.job_pod),
        ));
    }
    if let Some(name) = state.as_ref().and_then(|s| s.registry_secret.as_deref())
        && let Some(why) = crate::validate::dns1123_subdomain(name).into_iter().next()
    {
        return Err(InputError::new(
            "state.registrySecret",
            format!("{name:?} is not a secret name: {why}"),
        ));
    }
    Ok(Envelope {
        response_file,
        command,
        state,
    })
}

/// The longest single argument or `NAME=value` string Linux passes to a process
/// (`MAX_ARG_STRLEN`, 32 pages, with its terminating NUL).
pub(crate) const MAX_ARG_STRLEN: usize = 32 * 4096;

/// Refuses what no process can receive, naming the field: a NUL byte in an argument or
/// variable (it would be cut there, or dropped), or one over [`MAX_ARG_STRLEN`] (the start fails
/// with "Argument list too long", naming nothing).
fn check_process_strings(command: &Command) -> Result<(), InputError> {
    fn one(field: String, value: &str, extra: usize) -> Result<(), InputError> {
        if value.contains('\0') {
            return Err(InputError::new(
                field,
                "holds a NUL byte, which no process argument or variable can carry",
            ));
        }
        if value.len() + extra + 1 > MAX_ARG_STRLEN {
            return Err(InputError::new(
                field,
                format!(
                    "is {} bytes; Linux refuses a single argument or variable over 128 KiB (pass it in a file instead)",
                    value.len() + extra
                ),
            ));
        }
        Ok(())
    }
    fn env(prefix: &str, vars: &BTreeMap<String, String>) -> Result<(), InputError> {
        for (k, v) in vars {
            one(format!("{prefix}.environmentVariables.{k}"), v, k.len() + 1)?;
            one(format!("{prefix}.environmentVariables"), k, 0)?;
        }
        Ok(())
    }
    fn argv(prefix: &str, entry: Option<&str>, args: &[String]) -> Result<(), InputError> {
        if let Some(e) = entry {
            one(format!("{prefix}.entryPoint"), e, 0)?;
        }
        for (i, a) in args.iter().enumerate() {
            one(format!("{prefix}.entryPointArgs[{i}]"), a, 0)?;
        }
        Ok(())
    }
    match command {
        Command::PrepareJob(a) => {
            if let Some(c) = &a.container {
                env("args.container", &c.environment_variables)?;
                argv(
                    "args.container",
                    c.entry_point.as_deref(),
                    &c.entry_point_args,
                )?;
            }
            for (i, c) in a.services.iter().enumerate() {
                let p = format!("args.services[{i}]");
                env(&p, &c.environment_variables)?;
                argv(&p, c.entry_point.as_deref(), &c.entry_point_args)?;
            }
        }
        Command::RunScriptStep(a) => {
            env("args", &a.environment_variables)?;
            argv("args", Some(&a.entry_point), &a.entry_point_args)?;
            for (i, p) in a.prepend_path.iter().enumerate() {
                one(format!("args.prependPath[{i}]"), p, 0)?;
            }
        }
        Command::RunContainerStep(a) => {
            env("args", &a.environment_variables)?;
            argv("args", a.entry_point.as_deref(), &a.entry_point_args)?;
        }
        Command::CleanupJob => {}
    }
    Ok(())
}

fn required_args(args: Option<&Value>) -> Result<&Value, InputError> {
    args.ok_or_else(|| InputError::new("args", "missing"))
}

fn validate_prepare_args(a: &PrepareJobArgs) -> Result<(), InputError> {
    if let Some(c) = &a.container
        && c.image.trim().is_empty()
    {
        return Err(InputError::new("args.container.image", "empty"));
    }
    for (i, s) in a.services.iter().enumerate() {
        if s.image.trim().is_empty() {
            return Err(InputError::new(
                format!("args.services[{i}].image"),
                "empty",
            ));
        }
    }
    Ok(())
}

/// Deserialises `v` as `T`, turning serde's message into `path.to.field: reason`.
fn typed<T: DeserializeOwned>(root: &str, v: &Value) -> Result<T, InputError> {
    if v.is_null() {
        // `args: null` for prepare_job means "no container, no services".
        return serde_json::from_value(Value::Object(Default::default()))
            .map_err(|e| InputError::new(root, e.to_string()));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.inner().to_string();
        let mut path = root.to_string();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                serde_path_to_error::Segment::Map { key }
                | serde_path_to_error::Segment::Enum { variant: key } => {
                    path.push('.');
                    path.push_str(key);
                }
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        let (field, reason) = describe_serde_error(&inner);
        if let Some(f) = field {
            path.push('.');
            path.push_str(&f);
        }
        InputError::new(path, reason)
    })
}

/// Maps serde_json's messages onto `(missing field, reason)`.
fn describe_serde_error(msg: &str) -> (Option<String>, String) {
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    if let Some(rest) = msg.strip_prefix("missing field `")
        && let Some(field) = rest.strip_suffix('`')
    {
        return (Some(field.to_string()), "missing".to_string());
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        // "integer `3`, expected a string" -> "expected a string, got integer `3`"
        if let Some((got, expected)) = rest.split_once(", expected ") {
            return (None, format!("expected {expected}, got {got}"));
        }
    }
    (None, msg.to_string())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `null` means the same as an absent field.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The runner's `entryPointArgs` tokens (a list of strings, or null), decoded into the arguments
/// Docker mode would give the process.
fn runner_arguments<'de, D>(d: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    let tokens = Option::<Vec<String>>::deserialize(d)?.unwrap_or_default();
    Ok(crate::runner_args::decode(&tokens))
}

/// Accepts a list of strings, a single string (older runners), or null.
fn string_or_list<'de, D>(d: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) if s.is_empty() => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(input: &str) -> String {
        parse_envelope(input)
            .expect_err("input must be refused")
            .to_string()
    }

    #[test]
    fn parses_prepare_job_with_unknown_fields_and_nulls() {
        let e = parse_envelope(
            r#"{"command":"prepare_job","responseFile":"/tmp/r.json","futureField":1,
                "args":{"container":{"image":"node:20","workingDirectory":"/__w/r/r",
                "environmentVariables":null,"entryPoint":null,"entryPointArgs":null,
                "userMountVolumes":null,"registry":null,"portMappings":["80:8080"],"somethingNew":true},
                "services":null},"state":null}"#,
        )
        .expect("valid input");
        assert_eq!(
            e.response_file.as_deref(),
            Some(std::path::Path::new("/tmp/r.json"))
        );
        let Command::PrepareJob(a) = e.command else {
            panic!("wrong command")
        };
        let c = a.container.expect("container");
        assert_eq!(c.image, "node:20");
        assert!(c.environment_variables.is_empty());
        assert_eq!(c.port_mappings, vec!["80:8080"]);
        assert!(a.services.is_empty());
    }

    #[test]
    fn prepare_job_without_args_has_no_container() {
        let e = parse_envelope(r#"{"command":"prepare_job","responseFile":"/r"}"#).expect("valid");
        let Command::PrepareJob(a) = e.command else {
            panic!("wrong command")
        };
        assert!(a.container.is_none());
    }

    #[test]
    fn malformed_input_names_the_field() {
        assert_eq!(
            err("{nope"),
            "invalid hook input: stdin: not valid JSON (key must be a string at line 1 column 2)"
        );
        assert_eq!(
            err("[]"),
            "invalid hook input: stdin: expected a JSON object"
        );
        assert_eq!(
            err(r#"{"args":{}}"#),
            "invalid hook input: command: missing"
        );
        assert_eq!(
            err(r#"{"command":"run_step"}"#),
            "invalid hook input: command: unknown command \"run_step\" (expected prepare_job, run_script_step, run_container_step or cleanup_job)"
        );
        assert_eq!(
            err(r#"{"command":3}"#),
            "invalid hook input: command: expected a string, got a number"
        );
        assert_eq!(
            err(r#"{"command":"prepare_job","args":{"container":{"workingDirectory":"/__w"}}}"#),
            "invalid hook input: args.container.image: missing"
        );
        assert_eq!(
            err(r#"{"command":"prepare_job","args":{"services":[{"image":"redis"},{"image":5}]}}"#),
            "invalid hook input: args.services[1].image: expected a string, got integer `5`"
        );
        assert_eq!(
            err(r#"{"command":"run_script_step","args":{"entryPointArgs":[]}}"#),
            "invalid hook input: args.entryPoint: missing"
        );
        assert_eq!(
            err(r#"{"command":"run_script_step"}"#),
            "invalid hook input: args: missing"
        );
        assert_eq!(
            err(
                r#"{"command":"run_script_step","args":{"entryPoint":"bash","environmentVariables":{"A":1}}}"#
            ),
            "invalid hook input: args.environmentVariables.A: expected a string, got integer `1`"
        );
        assert_eq!(
            err(r#"{"command":"run_container_step","args":{"entryPoint":"sh"}}"#),
            "invalid hook input: args.image: missing (a container step needs image or dockerfile)"
        );
        assert_eq!(
            err(r#"{"command":"cleanup_job","state":{"jobPod":7}}"#),
            "invalid hook input: state.jobPod: expected a string, got integer `7`"
        );
        assert_eq!(
            err(r#"{"command":"prepare_job","args":{"container":{"image":" "}}}"#),
            "invalid hook input: args.container.image: empty"
        );
        assert_eq!(
            err(r#"{"command":"prepare_job","responseFile":5}"#),
            "invalid hook input: responseFile: expected a string, got a number"
        );
    }

    #[test]
    fn prepend_path_accepts_old_string_form() {
        let e = parse_envelope(
            r#"{"command":"run_script_step","args":{"entryPoint":"sh","prependPath":"/opt/bin","entryPointArgs":["-e","/__w/_temp/x.sh"]}}"#,
        )
        .expect("valid");
        let Command::RunScriptStep(a) = e.command else {
            panic!("wrong command")
        };
        assert_eq!(a.prepend_path, vec!["/opt/bin"]);
        assert_eq!(a.entry_point_args, vec!["-e", "/__w/_temp/x.sh"]);
    }

    #[test]
    fn state_round_trips_and_tolerates_extra_fields() {
        let e = parse_envelope(
            r#"{"command":"cleanup_job","state":{"jobPod":"r-workflow","other":1}}"#,
        )
        .expect("valid");
        assert_eq!(e.state.expect("state").job_pod, "r-workflow");
    }

    #[test]
    fn the_registry_secret_in_the_state_must_be_an_object_name() {
        let e = parse_envelope(
            r#"{"command":"cleanup_job","state":{"jobPod":"r-workflow","registrySecret":"r-secret-abcdefgh"}}"#,
        )
        .expect("valid");
        assert_eq!(
            e.state.expect("state").registry_secret.as_deref(),
            Some("r-secret-abcdefgh")
        );
        let e = parse_envelope(
            r#"{"command":"cleanup_job","state":{"jobPod":"r-workflow","registrySecret":"../../x"}}"#,
        )
        .expect_err("not a name");
        assert!(e.to_string().contains("state.registrySecret"), "{e}");
    }

    #[test]
    fn response_always_writes_is_alpine_and_string_ports() {
        let r = PrepareJobResponse {
            state: JobState {
                job_pod: "p".into(),
                ..Default::default()
            },
            context: ResponseContext {
                container: Some(ContextEntry {
                    image: "node:20".into(),
                    ports: [("8080".to_string(), "80".to_string())].into(),
                }),
                services: vec![],
            },
            is_alpine: false,
        };
        let v = serde_json::to_value(&r).expect("serialises");
        assert_eq!(v["isAlpine"], Value::Bool(false));
        assert_eq!(v["state"]["jobPod"], "p");
        assert_eq!(v["context"]["container"]["ports"]["8080"], "80");
        assert!(
            v["context"]["services"]
                .as_array()
                .expect("list")
                .is_empty()
        );
    }

    #[test]
    fn registry_credentials_need_both_parts() {
        let r = Registry {
            username: Some("u".into()),
            password: None,
            server_url: None,
        };
        assert!(!r.has_credentials());
        let r = Registry {
            username: Some("u".into()),
            password: Some("p".into()),
            server_url: None,
        };
        assert!(r.has_credentials());
    }
}
