//! The worker-podspec template (`ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE`): parsing, variables, and merge into the hook's objects.
//!
//! Rules (the spec's, upstream-compatible): `metadata.labels`/`annotations` are merged into the
//! object's; in `spec.containers`, `$job` merges into the job container, `$<service>` into that
//! service's container (by its container name, upstream's image-derived name),
//! `$step` into a container step's container, and any other container is added as a sidecar.
//! Merged containers append `env`, `envFrom`, `volumeMounts`, `volumeDevices` and `ports` and
//! override everything else, except `name`, `image`, `command` and `args` of the job and step
//! containers, which stay the hook's. Pod `volumes`, `imagePullSecrets`, `tolerations` and
//! `initContainers` are appended; every other pod field overrides.
//! String values may use `${RUNNER_POD_NAME}`, `${WORKFLOW_POD_NAME}`, `${RUNNER_NAMESPACE}` and
//! `${CACHE_SLOT}` (the lowest node cache slot no concurrent job on the node holds) and
//! `${CACHE_TRUST}` (`trusted` for a push, schedule, workflow_dispatch or release run on a protected
//! ref, else `untrusted`: [`crate::config::CacheTrust`]); `$${` writes a literal `${`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::objects::ephemeral::ALLOWED_FIELDS;
use crate::objects::job::STEP_CONTAINER_NAME;
use crate::objects::pod::JobPod;
use crate::objects::{JOB_CONTAINER_NAME, MANAGED_BY_LABEL, ROLE_LABEL, RUNNER_POD_LABEL};

/// Container list fields that are appended rather than replaced.
const APPENDED_CONTAINER_FIELDS: &[&str] =
    &["env", "envFrom", "volumeMounts", "volumeDevices", "ports"];
/// Pod fields that are appended rather than replaced.
const APPENDED_POD_FIELDS: &[&str] = &[
    "volumes",
    "imagePullSecrets",
    "tolerations",
    "initContainers",
];
/// Fields of the job and step containers a template cannot change.
const HOOK_OWNED_FIELDS: &[&str] = &["name", "image", "command", "args"];
/// Labels the hook relies on to find its objects again.
const PROTECTED_LABELS: &[&str] = &[RUNNER_POD_LABEL, ROLE_LABEL, MANAGED_BY_LABEL];

/// A template's `metadata` and `spec` (without containers), variables expanded.
type MetaAndSpec = (Map<String, Value>, Map<String, Value>);

/// A template that cannot be used. Displays as one line naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TemplateError {
    #[error("worker-podspec template {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("worker-podspec template {origin}: not valid YAML: {message}")]
    Yaml { origin: String, message: String },
    #[error("worker-podspec template {origin}: {field}: {message}")]
    Field {
        origin: String,
        field: String,
        message: String,
    },
}

/// A parsed worker-podspec template.
#[derive(Debug, Clone, Default)]
pub(crate) struct Template {
    origin: String,
    metadata: Map<String, Value>,
    spec: Map<String, Value>,
}

/// Values of the template variables for one runner.
#[derive(Debug, Clone)]
pub(crate) struct TemplateVars {
    pub runner_pod_name: String,
    pub workflow_pod_name: String,
    pub namespace: String,
    /// The node cache slot the job holds (`${CACHE_SLOT}`), when known.
    pub cache_slot: Option<String>,
    /// `trusted` or `untrusted` (`${CACHE_TRUST}`): which node caches the job may use.
    pub cache_trust: String,
}

impl TemplateVars {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "RUNNER_POD_NAME" => Some(&self.runner_pod_name),
            "WORKFLOW_POD_NAME" => Some(&self.workflow_pod_name),
            "RUNNER_NAMESPACE" => Some(&self.namespace),
            "CACHE_SLOT" => self.cache_slot.as_deref(),
            "CACHE_TRUST" => Some(&self.cache_trust),
            _ => None,
        }
    }
}

/// What a merge produced: the object and warnings for the job log.
#[derive(Debug, Clone)]
pub(crate) struct Merged<T> {
    pub object: T,
    pub warnings: Vec<String>,
}

impl Template {
    /// Reads and checks the template file.
    pub(crate) fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a template; `origin` names it in errors.
    pub(crate) fn parse(text: &str, origin: &str) -> Result<Self, TemplateError> {
        let origin = origin.to_string();
        let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| TemplateError::Yaml {
            origin: origin.clone(),
            message: e.to_string().replace('\n', " "),
        })?;
        let t = Template {
            origin,
            ..Default::default()
        };
        let mut top = match doc {
            Value::Null => return Ok(t),
            Value::Object(m) => m,
            _ => return Err(t.field("(document)", "expected a mapping with metadata and spec")),
        };
        let metadata = t.take_map(&mut top, "metadata")?;
        let spec = t.take_map(&mut top, "spec")?;
        if let Some(k) = top.keys().next() {
            return Err(t.field(
                k,
                "unknown top-level field (a template has only metadata and spec)",
            ));
        }
        let t = Template {
            metadata,
            spec,
            ..t
        };
        t.check()?;
        Ok(t)
    }

    fn field(&self, field: &str, message: impl Into<String>) -> TemplateError {
        TemplateError::Field {
            origin: self.origin.clone(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn take_map(
        &self,
        top: &mut Map<String, Value>,
        key: &str,
    ) -> Result<Map<String, Value>, TemplateError> {
        match top.remove(key) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m),
            Some(_) => Err(self.field(key, "expected a mapping")),
        }
    }

    /// Type-checks every part against the Kubernetes schema, naming the template's own paths.
    fn check(&self) -> Result<(), TemplateError> {
        self.typed::<ObjectMeta>("metadata", &Value::Object(self.metadata.clone()))?;
        let mut spec = self.spec.clone();
        let containers = match spec.remove("containers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(self.field("spec.containers", "expected a list")),
        };
        spec.insert("containers".into(), Value::Array(Vec::new()));
        self.typed::<PodSpec>("spec", &Value::Object(spec))?;
        for (i, c) in containers.iter().enumerate() {
            let path = format!("spec.containers[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                return Err(self.field(
                    &format!("{path}.name"),
                    "missing (use $job, $<service> or a sidecar name)",
                ));
            }
            self.typed::<Container>(&path, c)?;
            if !name.starts_with('$') {
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(self.field(
                        &format!("{path}.image"),
                        format!("sidecar {name:?} has no image"),
                    ));
                }
                if let Some(e) = crate::validate::dns1123_label(name).first() {
                    return Err(self.field(
                        &format!("{path}.name"),
                        format!("invalid sidecar name {name:?}: {e}"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn typed<T: DeserializeOwned>(&self, root: &str, v: &Value) -> Result<T, TemplateError> {
        serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                root.to_string()
            } else {
                format!("{root}.{path}")
            };
            self.field(&field, e.inner().to_string())
        })
    }

    /// The template's containers, substituted, with their index and name (`$job`, `$step`, a
    /// service's `$name`, or a sidecar's own name).
    fn containers(
        &self,
        vars: &TemplateVars,
    ) -> Result<Vec<(usize, String, Value)>, TemplateError> {
        let Some(Value::Array(list)) = self.spec.get("containers") else {
            return Ok(Vec::new());
        };
        list.iter()
            .enumerate()
            .map(|(i, tc)| {
                let tc = substitute(
                    tc.clone(),
                    vars,
                    &format!("spec.containers[{i}]"),
                    &self.origin,
                )?;
                let name = tc
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Ok((i, name, tc))
            })
            .collect()
    }

    /// Whether any string in the template names `${CACHE_SLOT}`: only then does a job take a
    /// cache slot.
    pub(crate) fn uses_cache_slot(&self) -> bool {
        fn names_it(v: &Value) -> bool {
            match v {
                Value::String(s) => variables_named(s).contains(&"CACHE_SLOT"),
                Value::Array(a) => a.iter().any(names_it),
                Value::Object(m) => m.values().any(names_it),
                _ => false,
            }
        }
        self.metadata.values().any(names_it) || self.spec.values().any(names_it)
    }

    /// Merges the template into the workflow pod.
    pub(crate) fn apply_to_job_pod(
        &self,
        job_pod: &JobPod,
        vars: &TemplateVars,
    ) -> Result<Merged<Pod>, TemplateError> {
        let mut warnings = Vec::new();
        let mut pod =
            serde_json::to_value(&job_pod.pod).map_err(|e| self.field("(pod)", e.to_string()))?;
        let (metadata, spec) = self.substituted(vars)?;
        merge_metadata(&mut pod["metadata"], &metadata, &mut warnings);
        let pod_spec = &mut pod["spec"];

        let mut extra_containers = Vec::new();
        for (i, name, tc) in self.containers(vars)? {
            let Some(target) = name.strip_prefix('$') else {
                extra_containers.push((i, name, tc));
                continue;
            };
            if target == STEP_CONTAINER_NAME {
                continue;
            }
            // Service container names never take `job` (names::service_container_names).
            let (container_name, hook_owned) = if target == JOB_CONTAINER_NAME {
                (JOB_CONTAINER_NAME.to_string(), true)
            } else {
                let svc = job_pod
                    .services
                    .iter()
                    .find(|s| s.container_name == target || s.image_name == target);
                match svc {
                    Some(s) => (s.container_name.clone(), false),
                    None => {
                        let known: Vec<String> = std::iter::once("$job".to_string())
                            .chain(
                                job_pod
                                    .services
                                    .iter()
                                    .map(|s| format!("${}", s.container_name)),
                            )
                            .collect();
                        return Err(self.field(
                            &format!("spec.containers[{i}].name"),
                            format!(
                                "{name:?} matches no container of this job (known: {})",
                                known.join(", ")
                            ),
                        ));
                    }
                }
            };
            let containers = pod_spec["containers"]
                .as_array_mut()
                .expect("the hook's pod always has a containers list");
            // A `$job` entry for a job without a job container (services only) has nothing to merge into.
            if let Some(base) = containers
                .iter_mut()
                .find(|c| c["name"] == container_name.as_str())
            {
                merge_container(base, &tc, hook_owned, &mut warnings);
            }
        }
        let hook_names: Vec<String> = pod_spec["containers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for (i, name, tc) in extra_containers {
            if hook_names.contains(&name) {
                return Err(self.field(
                    &format!("spec.containers[{i}].name"),
                    format!("sidecar name {name:?} is taken by the job's own container; rename the sidecar or use ${name} to merge into it"),
                ));
            }
            add_sidecar(pod_spec, tc);
        }
        merge_pod_spec(pod_spec, &spec);
        let object = self.typed::<Pod>("(merged pod)", &pod)?;
        Ok(Merged { object, warnings })
    }

    /// Merges the template into a container step's Job: metadata onto the Job and its pod
    /// template, `$step` into the step container, sidecars and pod fields into the pod template.
    pub(crate) fn apply_to_step_job(
        &self,
        job: &Job,
        vars: &TemplateVars,
    ) -> Result<Merged<Job>, TemplateError> {
        let mut warnings = Vec::new();
        let mut v = serde_json::to_value(job).map_err(|e| self.field("(job)", e.to_string()))?;
        let (metadata, spec) = self.substituted(vars)?;
        merge_metadata(&mut v["metadata"], &metadata, &mut warnings);
        merge_metadata(
            &mut v["spec"]["template"]["metadata"],
            &metadata,
            &mut Vec::new(),
        );
        let pod_spec = &mut v["spec"]["template"]["spec"];
        for (i, name, tc) in self.containers(vars)? {
            match name.strip_prefix('$') {
                Some(STEP_CONTAINER_NAME) => {
                    if let Some(base) = pod_spec["containers"]
                        .as_array_mut()
                        .and_then(|a| a.first_mut())
                    {
                        merge_container(base, &tc, true, &mut warnings);
                    }
                }
                Some(_) => {}
                None if name == STEP_CONTAINER_NAME => {
                    return Err(self.field(&format!("spec.containers[{i}].name"), "sidecar name \"step\" is taken by the step container; use $step to merge into it"));
                }
                None => add_sidecar(pod_spec, tc),
            }
        }
        merge_pod_spec(pod_spec, &spec);
        let object = self.typed::<Job>("(merged job)", &v)?;
        Ok(Merged { object, warnings })
    }

    /// Merges `$step` into a step running as an ephemeral container. Only the fields the API
    /// allows there are taken (env, envFrom, volumeMounts without sub-paths, securityContext,
    /// workingDir...); the rest (resources, ports, probes...) is dropped with a warning. Pod
    /// fields and sidecars were applied to the job pod by prepare_job and are not repeated.
    pub(crate) fn apply_to_ephemeral_step(
        &self,
        container: &EphemeralContainer,
        vars: &TemplateVars,
    ) -> Result<Merged<EphemeralContainer>, TemplateError> {
        let mut warnings = Vec::new();
        let mut base = serde_json::to_value(container)
            .map_err(|e| self.field("(ephemeral container)", e.to_string()))?;
        for (_, name, mut tc) in self.containers(vars)? {
            if name.strip_prefix('$') != Some(STEP_CONTAINER_NAME) {
                continue;
            }
            if let Some(obj) = tc.as_object_mut() {
                let dropped: Vec<String> = obj
                    .keys()
                    .filter(|k| !ALLOWED_FIELDS.contains(&k.as_str()))
                    .cloned()
                    .collect();
                for k in dropped {
                    obj.remove(&k);
                    warnings.push(format!(
                        "template $step.{k} is ignored: the step runs as an ephemeral container in the job pod, which cannot have it"
                    ));
                }
                if let Some(Value::Array(mounts)) = obj.get_mut("volumeMounts") {
                    mounts.retain(|m| {
                        let sub = m.get("subPath").or_else(|| m.get("subPathExpr"));
                        if sub.is_some() {
                            warnings.push(format!(
                                "template $step volumeMount at {} is ignored: ephemeral containers cannot mount sub-paths",
                                m.get("mountPath").and_then(Value::as_str).unwrap_or("?")
                            ));
                        }
                        sub.is_none()
                    });
                }
            }
            merge_container(&mut base, &tc, true, &mut warnings);
        }
        let object = self.typed::<EphemeralContainer>("(merged ephemeral container)", &base)?;
        Ok(Merged { object, warnings })
    }

    fn substituted(&self, vars: &TemplateVars) -> Result<MetaAndSpec, TemplateError> {
        let metadata = substitute(
            Value::Object(self.metadata.clone()),
            vars,
            "metadata",
            &self.origin,
        )?;
        let mut spec = self.spec.clone();
        spec.remove("containers");
        let spec = substitute(Value::Object(spec), vars, "spec", &self.origin)?;
        match (metadata, spec) {
            (Value::Object(m), Value::Object(s)) => Ok((m, s)),
            _ => unreachable!("substitution keeps a mapping a mapping"),
        }
    }
}

/// Replaces `${VAR}` in every string value below `v`.
fn substitute(
    v: Value,
    vars: &TemplateVars,
    path: &str,
    origin: &str,
) -> Result<Value, TemplateError> {
    Ok(match v {
        Value::String(s) => {
            Value::String(expand(&s, vars).map_err(|message| TemplateError::Field {
                origin: origin.to_string(),
                field: path.to_string(),
                message,
            })?)
        }
        Value::Array(a) => Value::Array(
            a.into_iter()
                .enumerate()
                .map(|(i, x)| substitute(x, vars, &format!("{path}[{i}]"), origin))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, x)| {
                    let p = format!("{path}.{k}");
                    substitute(x, vars, &p, origin).map(|x| (k, x))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => other,
    })
}

/// The variables `${NAME}` one string names, scanned as [`expand`] does (`$${` names none).
pub(crate) fn variables_named(s: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        let after = &rest[pos..];
        if let Some(r) = after.strip_prefix("$${") {
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let Some(end) = r.find('}') else { break };
            names.push(&r[..end]);
            rest = &r[end + 1..];
        } else {
            rest = &after[1..];
        }
    }
    names
}

/// Expands `${NAME}` in one string; `$${` is a literal `${`; `$(VAR)` (Kubernetes' own) is left alone.
pub(crate) fn expand(s: &str, vars: &TemplateVars) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unterminated variable in {s:?}"))?;
            let name = &r[..end];
            let value = vars.get(name).ok_or_else(|| {
                if name == "CACHE_SLOT" {
                    return "${CACHE_SLOT}: no cache slot is known for this pod (only the workflow pod and its step Jobs hold one)".to_string();
                }
                format!("unknown variable ${{{name}}} (known: ${{RUNNER_POD_NAME}}, ${{WORKFLOW_POD_NAME}}, ${{RUNNER_NAMESPACE}}, ${{CACHE_SLOT}}, ${{CACHE_TRUST}}; write $${{ for a literal ${{)")
            })?;
            out.push_str(value);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn merge_metadata(base: &mut Value, from: &Map<String, Value>, warnings: &mut Vec<String>) {
    if !base.is_object() {
        *base = Value::Object(Map::new());
    }
    for (key, value) in from {
        match key.as_str() {
            "labels" | "annotations" => {
                let Some(entries) = value.as_object() else {
                    continue;
                };
                let target = &mut base[key.as_str()];
                if !target.is_object() {
                    *target = Value::Object(Map::new());
                }
                for (k, v) in entries {
                    if key == "labels" && PROTECTED_LABELS.contains(&k.as_str()) {
                        warnings.push(format!(
                            "template label {k} is ignored: arc-hook uses it to find its objects"
                        ));
                        continue;
                    }
                    target[k.as_str()] = v.clone();
                }
            }
            other => warnings.push(format!(
                "template metadata.{other} is ignored (only labels and annotations are merged)"
            )),
        }
    }
}

fn merge_container(base: &mut Value, from: &Value, hook_owned: bool, warnings: &mut Vec<String>) {
    let Some(from) = from.as_object() else { return };
    let cname = base["name"].as_str().unwrap_or_default().to_string();
    for (key, value) in from {
        if key == "name" {
            continue;
        }
        if key == "image" || (hook_owned && HOOK_OWNED_FIELDS.contains(&key.as_str())) {
            warnings.push(format!(
                "template sets {key} of container {cname:?}: ignored, the workflow decides it"
            ));
            continue;
        }
        if APPENDED_CONTAINER_FIELDS.contains(&key.as_str()) {
            append(&mut base[key.as_str()], value);
        } else {
            base[key.as_str()] = value.clone();
        }
    }
}

/// Appends a sidecar to a pod spec's containers.
fn add_sidecar(pod_spec: &mut Value, container: Value) {
    if let Some(a) = pod_spec["containers"].as_array_mut() {
        a.push(container);
    }
}

fn merge_pod_spec(base: &mut Value, from: &Map<String, Value>) {
    for (key, value) in from {
        if APPENDED_POD_FIELDS.contains(&key.as_str()) {
            append(&mut base[key.as_str()], value);
        } else {
            base[key.as_str()] = value.clone();
        }
    }
}

fn append(target: &mut Value, extra: &Value) {
    let Some(items) = extra.as_array() else {
        return;
    };
    match target {
        Value::Array(a) => a.extend(items.iter().cloned()),
        _ => *target = Value::Array(items.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::BuildContext;
    use crate::protocol::{ContainerDefinition, PrepareJobArgs, RunContainerStepArgs};
    use std::collections::BTreeMap;

    fn ctx() -> BuildContext {
        crate::objects::test_context()
    }

    #[test]
    fn only_a_template_naming_cache_slot_uses_one() {
        assert_eq!(
            variables_named("a-${CACHE_SLOT}-$${CACHE_SLOT}-$(X)-${RUNNER_POD_NAME}"),
            ["CACHE_SLOT", "RUNNER_POD_NAME"]
        );
        let uses = |yaml: &str| {
            Template::parse(yaml, "t")
                .expect("template")
                .uses_cache_slot()
        };
        assert!(uses(
            "spec:\n  containers:\n    - name: $job\n      volumeMounts:\n        - {name: c, mountPath: /c, subPath: \"slot-${CACHE_SLOT}\"}\n  volumes:\n    - {name: c, hostPath: {path: /mnt}}\n"
        ));
        assert!(uses("metadata:\n  labels:\n    slot: \"${CACHE_SLOT}\"\n"));
        assert!(!uses(
            "metadata:\n  labels:\n    slot: \"$${CACHE_SLOT}\"\n"
        ));
        assert!(!uses(
            "metadata:\n  labels:\n    r: \"${RUNNER_POD_NAME}\"\n"
        ));
    }

    fn vars() -> TemplateVars {
        TemplateVars {
            runner_pod_name: "arc-runner".into(),
            workflow_pod_name: "arc-runner-workflow".into(),
            namespace: "ci".into(),
            cache_slot: Some("0".into()),
            cache_trust: "untrusted".into(),
        }
    }

    fn job_pod() -> JobPod {
        let args = PrepareJobArgs {
            container: Some(ContainerDefinition {
                image: "node:20".into(),
                environment_variables: BTreeMap::from([("A".into(), "1".into())]),
                ..Default::default()
            }),
            services: vec![
                ContainerDefinition {
                    image: "registry.example.internal/cache/redis:7".into(),
                    ..Default::default()
                },
                ContainerDefinition {
                    image: "postgres:16".into(),
                    ..Default::default()
                },
            ],
        };
        crate::objects::pod::job_pod(&ctx(), &args, None).expect("valid args")
    }

    fn merge(yaml: &str) -> Result<Merged<Pod>, TemplateError> {
        Template::parse(yaml, "t.yaml")?.apply_to_job_pod(&job_pod(), &vars())
    }

    fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
        pod.spec
            .as_ref()
            .expect("spec")
            .containers
            .iter()
            .find(|c| c.name == name)
            .expect("container present")
    }

    #[test]
    fn job_container_lists_append_and_scalars_override() {
        let m = merge(
            r#"
spec:
  containers:
    - name: $job
      image: evil:latest
      command: ["sh"]
      env: [{name: B, value: "2"}]
      volumeMounts: [{name: cache, mountPath: /cache}]
      ports: [{containerPort: 9000}]
      resources: {limits: {cpu: "2"}}
      securityContext: {runAsUser: 1001}
"#,
        )
        .expect("merges");
        let job = container(&m.object, "job");
        assert_eq!(job.image.as_deref(), Some("node:20"));
        assert_eq!(job.command.as_deref().expect("command")[0], "tail");
        let env: Vec<_> = job
            .env
            .as_ref()
            .expect("env")
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(env, vec!["A", "GITHUB_ACTIONS", "CI", "B"]);
        assert_eq!(
            job.volume_mounts
                .as_ref()
                .expect("mounts")
                .last()
                .expect("one")
                .mount_path,
            "/cache"
        );
        assert_eq!(job.ports.as_ref().expect("ports")[0].container_port, 9000);
        assert!(
            job.resources
                .as_ref()
                .expect("resources")
                .limits
                .as_ref()
                .expect("limits")
                .contains_key("cpu")
        );
        assert_eq!(
            job.security_context.as_ref().expect("sc").run_as_user,
            Some(1001)
        );
        assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
        assert!(
            m.warnings
                .iter()
                .any(|w| w.contains("sets image of container \"job\"")),
            "{:?}",
            m.warnings
        );
        assert!(
            m.warnings.iter().any(|w| w.contains("sets command")),
            "{:?}",
            m.warnings
        );
    }

    #[test]
    fn services_match_by_image_derived_name() {
        let m = merge(
            r#"
spec:
  containers:
    - name: $redis
      env: [{name: X, value: "1"}]
    - name: $postgres
      args: ["-c", "fsync=off"]
"#,
        )
        .expect("merges");
        assert_eq!(
            container(&m.object, "redis")
                .env
                .as_ref()
                .expect("env")
                .last()
                .expect("x")
                .name,
            "X"
        );
        assert_eq!(
            container(&m.object, "postgres")
                .args
                .as_deref()
                .expect("args")[1],
            "fsync=off"
        );
    }

    #[test]
    fn unknown_service_is_an_error() {
        let e = merge("spec:\n  containers:\n    - name: $redsi\n").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "worker-podspec template t.yaml: spec.containers[0].name: \"$redsi\" matches no container of this job (known: $job, $redis, $postgres)"
        );
    }

    #[test]
    fn sidecars_are_added_and_need_an_image() {
        let m = merge("spec:\n  containers:\n    - name: dind\n      image: docker:dind\n")
            .expect("merges");
        assert_eq!(
            container(&m.object, "dind").image.as_deref(),
            Some("docker:dind")
        );
        let e = merge("spec:\n  containers:\n    - name: dind\n").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "worker-podspec template t.yaml: spec.containers[0].image: sidecar \"dind\" has no image"
        );
        let e = merge("spec:\n  containers:\n    - name: redis\n      image: x\n")
            .expect_err("refused");
        assert!(
            e.to_string().contains("sidecar name \"redis\" is taken"),
            "{e}"
        );
        let e = merge("spec:\n  containers:\n    - name: Bad_Name\n      image: x\n")
            .expect_err("refused");
        assert!(
            e.to_string().starts_with(
                "worker-podspec template t.yaml: spec.containers[0].name: invalid sidecar name"
            ),
            "{e}"
        );
    }

    #[test]
    fn pod_fields_append_or_override() {
        let m = merge(
            r#"
metadata:
  labels: {team: ml, runner-pod: other}
  annotations: {a: b}
spec:
  nodeSelector: {disk: ssd}
  serviceAccountName: ci-jobs
  tolerations: [{key: gpu, operator: Exists}]
  volumes: [{name: cache, emptyDir: {}}]
  imagePullSecrets: [{name: extra}]
"#,
        )
        .expect("merges");
        let labels = m.object.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["team"], "ml");
        assert_eq!(labels["runner-pod"], "arc-runner", "protected label kept");
        assert_eq!(
            m.object.metadata.annotations.as_ref().expect("annotations")["a"],
            "b"
        );
        let spec = m.object.spec.as_ref().expect("spec");
        assert_eq!(spec.node_selector.as_ref().expect("ns")["disk"], "ssd");
        assert_eq!(spec.service_account_name.as_deref(), Some("ci-jobs"));
        assert_eq!(spec.volumes.as_ref().expect("volumes").len(), 2);
        assert_eq!(spec.volumes.as_ref().expect("volumes")[0].name, "work");
        assert_eq!(spec.tolerations.as_ref().expect("tol").len(), 1);
        assert_eq!(
            spec.image_pull_secrets.as_ref().expect("ips")[0].name,
            "extra"
        );
        assert!(format!("{:?}", spec.affinity).contains("node-1"));
    }

    #[test]
    fn variables_are_substituted() {
        let m = merge(
            r#"
spec:
  containers:
    - name: $job
      volumeMounts: [{name: uv, mountPath: /mnt/cache/uv, subPath: "${RUNNER_POD_NAME}"}]
      env: [{name: LIT, value: "$${HOME} $(X) ${RUNNER_NAMESPACE}"}]
  volumes: [{name: uv, hostPath: {path: "/var/cache/${WORKFLOW_POD_NAME}"}}]
"#,
        )
        .expect("merges");
        let job = container(&m.object, "job");
        assert_eq!(
            job.volume_mounts
                .as_ref()
                .expect("m")
                .last()
                .expect("uv")
                .sub_path
                .as_deref(),
            Some("arc-runner")
        );
        assert_eq!(
            job.env
                .as_ref()
                .expect("env")
                .last()
                .expect("lit")
                .value
                .as_deref(),
            Some("${HOME} $(X) ci")
        );
        let vols = m
            .object
            .spec
            .as_ref()
            .expect("spec")
            .volumes
            .as_ref()
            .expect("v");
        assert_eq!(
            vols[1].host_path.as_ref().expect("hp").path,
            "/var/cache/arc-runner-workflow"
        );
        let e = merge("spec:\n  containers:\n    - name: $job\n      workingDir: \"${NOPE}\"\n")
            .expect_err("refused");
        assert!(e.to_string().starts_with("worker-podspec template t.yaml: spec.containers[0].workingDir: unknown variable ${NOPE}"), "{e}");
    }

    #[test]
    fn bad_templates_are_one_line_errors() {
        let e = Template::parse("spec: [", "t.yaml").expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("worker-podspec template t.yaml: not valid YAML:"),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'));
        let e = Template::parse("- a", "t.yaml").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "worker-podspec template t.yaml: (document): expected a mapping with metadata and spec"
        );
        let e = Template::parse("kind: Pod\nspec: {}", "t.yaml").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "worker-podspec template t.yaml: kind: unknown top-level field (a template has only metadata and spec)"
        );
        let e = Template::parse(
            "spec:\n  containers:\n    - name: $job\n      resources: {limits: {cpu: [1]}}\n",
            "t.yaml",
        )
        .expect_err("refused");
        assert!(
            e.to_string().starts_with(
                "worker-podspec template t.yaml: spec.containers[0].resources.limits.cpu:"
            ),
            "{e}"
        );
        let e = Template::parse("spec:\n  containers:\n    - image: x\n", "t.yaml")
            .expect_err("refused");
        assert!(
            e.to_string().contains("spec.containers[0].name: missing"),
            "{e}"
        );
        let e = Template::load(Path::new("/nonexistent/t.yaml")).expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("worker-podspec template /nonexistent/t.yaml: cannot read it:"),
            "{e}"
        );
        assert!(
            Template::parse("", "t.yaml").is_ok(),
            "an empty template changes nothing"
        );
    }

    #[test]
    fn step_jobs_merge_step_container() {
        let args = RunContainerStepArgs {
            image: Some("alpine".into()),
            ..Default::default()
        };
        let (c, v) = crate::objects::job::step_container(&args, "alpine", "r/r").expect("valid");
        let job = crate::objects::job::container_step_job(&ctx(), "arc-runner-step-x", c, v, None);
        let t = Template::parse(
            "metadata: {labels: {team: ml}}\nspec:\n  containers:\n    - name: $step\n      env: [{name: S, value: \"1\"}]\n    - name: $job\n      env: [{name: J, value: \"1\"}]\n",
            "t.yaml",
        )
        .expect("valid");
        let m = t.apply_to_step_job(&job, &vars()).expect("merges");
        let spec = m.object.spec.as_ref().expect("spec");
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .expect("meta")
            .labels
            .as_ref()
            .expect("labels");
        assert_eq!(pod_labels["team"], "ml");
        let env: Vec<_> = spec.template.spec.as_ref().expect("pod").containers[0]
            .env
            .as_ref()
            .expect("env")
            .iter()
            .map(|e| e.name.clone())
            .collect();
        assert!(env.contains(&"S".to_string()) && !env.contains(&"J".to_string()));
    }

    #[test]
    fn ephemeral_steps_take_only_allowed_fields() {
        let args = RunContainerStepArgs::default();
        let (c, _) = crate::objects::ephemeral::ephemeral_step_container(&args, "alpine", "step-x")
            .expect("valid")
            .expect("ephemeral");
        let t = Template::parse(
            "spec:\n  containers:\n    - name: $step\n      env: [{name: S, value: \"${RUNNER_POD_NAME}\"}]\n      resources: {limits: {memory: 1Gi}}\n      securityContext: {runAsUser: 1000}\n      volumeMounts: [{name: cache, mountPath: /c}, {name: cache, mountPath: /d, subPath: x}]\n",
            "t.yaml",
        )
        .expect("valid");
        let m = t.apply_to_ephemeral_step(&c, &vars()).expect("merges");
        let env = m.object.env.as_ref().expect("env");
        assert!(
            env.iter()
                .any(|e| e.name == "S" && e.value.as_deref() == Some("arc-runner"))
        );
        assert!(m.object.resources.is_none());
        assert_eq!(
            m.object
                .security_context
                .as_ref()
                .and_then(|s| s.run_as_user),
            Some(1000)
        );
        let mounts: Vec<_> = m
            .object
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .map(|v| v.mount_path.as_str())
            .collect();
        assert!(mounts.contains(&"/c") && !mounts.contains(&"/d"));
        assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("$step.resources"));
    }
}
