#!/usr/bin/env bash
# Installs or upgrades the ARC controller (gha-runner-scale-set-controller) as release `arc` in arc-systems.
#   ARC_CHART_REPO     OCI repository of the ARC charts (upstream registry or your mirror); required
#   ARC_CHART_VERSION  defaults to `arc-chart` in ../versions.yaml
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${ARC_CHART_REPO:?set ARC_CHART_REPO to the OCI repository of the ARC charts (README: Install order)}"
version="${ARC_CHART_VERSION:-$(sed -n 's/^arc-chart: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$here/../versions.yaml")}"
helm upgrade --install arc "$ARC_CHART_REPO/gha-runner-scale-set-controller" \
  --version "$version" --namespace arc-systems -f "$here/values.yaml" --wait
