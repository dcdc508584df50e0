//! deploy/ parses into typed Kubernetes objects: every manifest file, every rendered kustomization and
//! every scale set's runner pod template, with no field that the typed object would drop.
//!
//! A field that k8s-openapi does not know (a typo like `volumeMount`, a field at the wrong level) is
//! silently ignored by serde; the API server would reject or ignore it too. So each object is parsed,
//! serialised back and compared with the original: whatever differs was not understood.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::{
    admissionregistration::v1 as admission, apps::v1 as apps, batch::v1 as batch, core::v1 as core,
    networking::v1 as networking, rbac::v1 as rbac,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

/// Parses `value` as `T` and returns the paths of everything `T` did not keep.
fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Vec<String>, String> {
    let typed: T = serde_path_to_error::deserialize(value.clone())
        .map_err(|e| format!("{} at {}", e.inner(), e.path()))?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut lost = Vec::new();
    diff(value, &back, String::new(), &mut lost);
    Ok(lost)
}

/// Collects paths present in `original` but missing or different in `typed`.
fn diff(original: &Value, typed: &Value, path: String, lost: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                match b.get(k) {
                    Some(w) => diff(v, w, format!("{path}.{k}"), lost),
                    None => lost.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                diff(v, w, format!("{path}[{i}]"), lost);
            }
        }
        // Numbers may come back as another representation of the same value (1 vs 1.0).
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        _ => lost.push(format!("{path} (was {original}, typed {typed})")),
    }
}

/// Kinds of the kubectl-applied parts, checked against their k8s-openapi type. Custom resources
/// (monitoring.coreos.com, cert-manager.io) have no k8s-openapi type; scripts/check-deploy.py checks them.
fn check_object(value: &Value) -> Result<Vec<String>, String> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let kind = value["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Namespace") => round_trip::<core::Namespace>(value),
        ("v1", "ServiceAccount") => round_trip::<core::ServiceAccount>(value),
        ("v1", "ConfigMap") => round_trip::<core::ConfigMap>(value),
        ("v1", "Service") => round_trip::<core::Service>(value),
        ("v1", "PersistentVolumeClaim") => round_trip::<core::PersistentVolumeClaim>(value),
        ("v1", "Pod") => round_trip::<core::Pod>(value),
        ("apps/v1", "Deployment") => round_trip::<apps::Deployment>(value),
        ("apps/v1", "DaemonSet") => round_trip::<apps::DaemonSet>(value),
        ("batch/v1", "Job") => round_trip::<batch::Job>(value),
        ("batch/v1", "CronJob") => round_trip::<batch::CronJob>(value),
        ("networking.k8s.io/v1", "NetworkPolicy") => round_trip::<networking::NetworkPolicy>(value),
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::Role>(value),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<rbac::RoleBinding>(value),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            round_trip::<admission::ValidatingAdmissionPolicy>(value)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            round_trip::<admission::ValidatingAdmissionPolicyBinding>(value)
        }
        (group, _)
            if group.starts_with("monitoring.coreos.com/")
                || group.starts_with("cert-manager.io/") =>
        {
            Ok(vec![])
        }
        _ => Err(format!(
            "no typed check for {api_version} {kind}: add it to check_object"
        )),
    }
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("YAML does not parse: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// Checks every object in `docs`, returning one line per problem.
fn check_documents(source: &str, docs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for doc in docs {
        let name = format!(
            "{source}: {} {}",
            doc["kind"].as_str().unwrap_or("?"),
            doc["metadata"]["name"].as_str().unwrap_or("?")
        );
        match check_object(doc) {
            Ok(lost) if lost.is_empty() => {}
            Ok(lost) => problems.push(format!(
                "{name}: fields the typed object does not know: {}",
                lost.join(", ")
            )),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    problems
}

fn files_with_extension(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
    {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files_with_extension(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

/// Manifests: YAML files under deploy/ whose documents are Kubernetes objects (not Helm values,
/// kustomizations or workflows, which have no apiVersion/kind pair of an API object).
#[test]
fn every_manifest_file_parses_into_typed_objects() {
    let mut files = Vec::new();
    files_with_extension(&deploy(), "yaml", &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable manifest");
        let docs: Vec<Value> = yaml_documents(&text)
            .into_iter()
            .filter(|d| d.get("apiVersion").is_some() && d.get("kind").is_some())
            .filter(|d| d["kind"] != "Kustomization")
            .collect();
        checked += docs.len();
        problems.extend(check_documents(
            &file
                .strip_prefix(root())
                .unwrap_or(file)
                .display()
                .to_string(),
            &docs,
        ));
    }
    assert!(
        checked >= 20,
        "only {checked} manifests found under deploy/"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The kubectl to render with: KUBECTL, or the first `kubectl` on PATH.
fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string())
}

#[test]
fn every_rendered_kustomization_parses_into_typed_objects() {
    let mut kustomizations = Vec::new();
    files_with_extension(&deploy(), "yaml", &mut kustomizations);
    kustomizations.retain(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"));
    kustomizations.sort();
    assert!(
        kustomizations.len() >= 6,
        "expected a kustomization per part, found {kustomizations:?}"
    );
    let mut problems = Vec::new();
    let mut kinds = BTreeSet::new();
    for k in &kustomizations {
        let dir = k.parent().expect("kustomization has a directory");
        let out = Command::new(kubectl())
            .args(["kustomize", &dir.display().to_string()])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} (set KUBECTL to a kubectl binary): {e}",
                    kubectl()
                )
            });
        assert!(
            out.status.success(),
            "kubectl kustomize {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = yaml_documents(&String::from_utf8_lossy(&out.stdout));
        assert!(!docs.is_empty(), "{} renders nothing", dir.display());
        kinds.extend(
            docs.iter()
                .filter_map(|d| d["kind"].as_str().map(str::to_string)),
        );
        problems.extend(check_documents(
            &format!("kustomize {}", dir.display()),
            &docs,
        ));
    }
    for kind in [
        "Role",
        "RoleBinding",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "CronJob",
        "Job",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} rendered from deploy/; rendered {kinds:?}"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Helm's values merge: maps merge, anything else from `over` replaces `base`.
fn helm_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => helm_merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[test]
fn every_scale_set_runner_template_is_a_typed_pod_template() {
    let dir = deploy().join("scale-sets");
    let common: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(dir.join("common.values.yaml")).expect("common values"),
    )
    .expect("common values parse");
    let mut problems = Vec::new();
    let mut sets = 0;
    for entry in std::fs::read_dir(&dir).expect("scale-sets directory") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !name.ends_with(".values.yaml") || name == "common.values.yaml" {
            continue;
        }
        sets += 1;
        let own: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).expect("values"))
            .expect("values parse");
        let mut values = common.clone();
        helm_merge(&mut values, &own);
        let template = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": values["template"]["metadata"], "spec": values["template"]["spec"]});
        problems.extend(check_documents(&format!("{name} template"), &[template]));
        if let Some(listener) = values.get("listenerTemplate") {
            let pod =
                serde_json::json!({"apiVersion": "v1", "kind": "Pod", "spec": listener["spec"]});
            problems.extend(check_documents(&format!("{name} listenerTemplate"), &[pod]));
        }
        if let Some(claim) = values["containerMode"].get("kubernetesModeWorkVolumeClaim") {
            let pvc = serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "work"}, "spec": claim});
            problems.extend(check_documents(
                &format!("{name} work volume claim"),
                &[pvc],
            ));
        }
    }
    assert_eq!(sets, 7, "expected seven scale sets in deploy/scale-sets");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_round_trip_catches_a_misspelled_field() {
    let pod: Value = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i", "volumeMount": [{"name": "v", "mountPath": "/v"}]}]}
    });
    let lost = check_object(&pod).expect("a Pod is checkable");
    assert_eq!(lost, vec![".spec.containers[0].volumeMount".to_string()]);
}
