#!/usr/bin/env bash
# Upgrades ARC in lock-step to one chart version: its CRDs first (server-side apply), then the
# controller, then the scale sets. Helm installs a chart's crds/ on first install only and never
# upgrades them, so a plain `helm upgrade` leaves a new controller on old CRDs. The version-tracking
# pull request that moves `arc-chart` in versions.yaml points here.
#
#   deploy/upgrade-arc.sh VERSION [SCALE_SET...]     (default: all seven scale sets)
#
#   ARC_CHART_REPO  OCI repository holding both charts (upstream registry or your mirror), as the
#                   install scripts take it; or
#   ARC_CHART_DIR   a directory with both charts of VERSION unpacked (gha-runner-scale-set-controller/
#                   and gha-runner-scale-set/), e.g. for an air-gapped cluster
#   ARC_HELM_WAIT   true (default): each release waits for its pods; false: do not wait
#
# Needs helm >= 3.8 and kubectl on the target cluster. Every step is idempotent: after a failure, fix
# the cause and run it again. Then set `arc-chart: VERSION` in versions.yaml (the pull request does).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${1:?usage: upgrade-arc.sh VERSION [SCALE_SET...]}"
shift

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [[ -n ${ARC_CHART_DIR:-} ]]; then
  charts="$ARC_CHART_DIR"
else
  : "${ARC_CHART_REPO:?set ARC_CHART_REPO (OCI repository of the ARC charts) or ARC_CHART_DIR}"
  charts="$work/charts"
  for chart in gha-runner-scale-set-controller gha-runner-scale-set; do
    helm pull "$ARC_CHART_REPO/$chart" --version "$version" --untar --untardir "$charts"
  done
fi
for chart in gha-runner-scale-set-controller gha-runner-scale-set; do
  got="$(sed -n 's/^version: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$charts/$chart/Chart.yaml")"
  [[ $got == "$version" ]] || { echo "upgrade-arc.sh: $charts/$chart is $got, not $version" >&2; exit 1; }
done

echo "==> CRDs of gha-runner-scale-set-controller $version (server-side apply)"
# --force-conflicts: Helm's first install owns the fields; this apply takes them over.
kubectl apply --server-side --force-conflicts --field-manager arc-upgrade \
  -f "$charts/gha-runner-scale-set-controller/crds/"
for crd in "$charts"/gha-runner-scale-set-controller/crds/*.yaml; do
  kubectl wait --for condition=Established --timeout 60s \
    "crd/$(sed -n 's/^  name: //p' "$crd" | head -n 1)"
done

echo "==> controller $version"
ARC_CHART_DIR="$charts" ARC_CHART_VERSION="$version" "$here/arc-controller/install.sh"

echo "==> scale sets $version"
ARC_CHART_DIR="$charts" ARC_CHART_VERSION="$version" "$here/scale-sets/install.sh" "$@"
echo "upgrade-arc.sh: ARC is at $version; set arc-chart: \"$version\" in deploy/versions.yaml"
