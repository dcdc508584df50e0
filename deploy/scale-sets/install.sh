#!/usr/bin/env bash
# Installs or upgrades runner scale sets with Helm: ./install.sh [NAME...] (default: all seven).
#
#   ARC_CHART_REPO  OCI repository holding the gha-runner-scale-set chart (no default: set it to
#                   the upstream chart registry or your mirror, e.g. oci://<registry>/<path>); or
#   ARC_CHART_DIR   a directory holding the unpacked chart (gha-runner-scale-set/)
#   ARC_CHART_VERSION  defaults to `arc-chart` in ../versions.yaml
#   ARC_HELM_WAIT   true (default): wait for each release's resources; false: do not
# A new chart version goes through ../upgrade-arc.sh (CRDs, controller, then these, in lock-step).
#
# Needs: helm >= 3.8 (OCI), kubectl context on the target cluster, and, applied beforehand,
# ../namespaces, ../rbac, ../hook-templates, ../storage and the arc-github-app Secret.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${ARC_CHART_VERSION:-$(sed -n 's/^arc-chart: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$here/../versions.yaml")}"
all=(runner-base runner-cpu runner-cpu-largememory runner-highcpu runner-hybrid runner-gpu runner-fpga)
if [[ -n ${ARC_CHART_DIR:-} ]]; then
  chart=("$ARC_CHART_DIR/gha-runner-scale-set")
else
  : "${ARC_CHART_REPO:?set ARC_CHART_REPO to the OCI repository of the ARC charts (README: Install order)}"
  chart=("$ARC_CHART_REPO/gha-runner-scale-set" --version "$version")
fi
wait=(--wait)
[[ ${ARC_HELM_WAIT:-true} == true ]] || wait=()
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=("${all[@]}")

# runner-base (Docker-in-Docker, privileged) runs apart from the hook's sets: ../namespaces.
namespace() { if [[ $1 == runner-base ]]; then echo arc-privileged; else echo arc-runners; fi; }

for name in "${names[@]}"; do
  values="$here/$name.values.yaml"
  [[ -f $values ]] || { echo "install.sh: no $values; known scale sets: ${all[*]}" >&2; exit 2; }
  echo "==> $name (gha-runner-scale-set $version)"
  helm upgrade --install "$name" "${chart[@]}" --namespace "$(namespace "$name")" \
    -f "$here/common.values.yaml" -f "$values" "${wait[@]}"
done
