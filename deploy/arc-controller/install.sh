#!/usr/bin/env bash
# Installs or upgrades the ARC controller (gha-runner-scale-set-controller) as release `arc` in arc-systems.
# An upgrade to a new chart version goes through ../upgrade-arc.sh, which applies the CRDs first.
#   ARC_CHART_REPO     OCI repository of the ARC charts (upstream registry or your mirror); or
#   ARC_CHART_DIR      a directory holding the unpacked chart (gha-runner-scale-set-controller/)
#   ARC_CHART_VERSION  defaults to `arc-chart` in ../versions.yaml
#   ARC_HELM_WAIT      true (default): wait for the controller to be ready; false: do not
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${ARC_CHART_VERSION:-$(sed -n 's/^arc-chart: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$here/../versions.yaml")}"
if [[ -n ${ARC_CHART_DIR:-} ]]; then
  chart=("$ARC_CHART_DIR/gha-runner-scale-set-controller")
else
  : "${ARC_CHART_REPO:?set ARC_CHART_REPO to the OCI repository of the ARC charts (README: Install order)}"
  chart=("$ARC_CHART_REPO/gha-runner-scale-set-controller" --version "$version")
fi
wait=(--wait)
[[ ${ARC_HELM_WAIT:-true} == true ]] || wait=()
helm upgrade --install arc "${chart[@]}" --namespace arc-systems -f "$here/values.yaml" "${wait[@]}"
