#!/usr/bin/env bash
# Builds the real counterparts scripts/check-deploy.py checks deploy/ against, cached under
# target/deploy-tools/ (rebuilt only when their go.mod/go.sum change):
#   vault  HashiCorp Vault, from tests/deploy-tools/vault (its own main has replace directives, so
#          a main of ours calls its command entry point; versions pinned by go.sum)
#   helm   Helm 3, `go build helm.sh/helm/v3/cmd/helm` in tests/deploy-tools/helm (pinned by go.sum)
#   arc/   ARC's charts (gha-runner-scale-set, gha-runner-scale-set-controller and its CRDs) at the
#          commits named below: from the Go module proxy (`go mod download`), or from a git directory
#          of github.com/actions/actions-runner-controller given as ARC_GIT_DIR.
#
# To move ARC: pick the commit the chart tag gha-runner-scale-set-X.Y.Z points to
# (`git rev-list -n1 gha-runner-scale-set-X.Y.Z`), make it ARC_COMMIT, make the old one
# ARC_PREVIOUS_COMMIT (the upgrade test starts from it), and set arc-chart in deploy/versions.yaml.
#
#   scripts/deploy-tools.sh [vault|helm|arc]...   (all three by default); prints each tool's path
set -euo pipefail
cd "$(dirname "$0")/.."

# gha-runner-scale-set-0.14.2 and -0.14.1 (chart tags are not module versions, so commits are named).
ARC_COMMIT=9bb16ae49d0ce585d8e682aa7e2668a6e832d5d8
ARC_PREVIOUS_COMMIT=74cfc3855ead2760f0b11d49feacf8d88bcb8ae0
OUT="${DEPLOY_TOOLS_DIR:-$PWD/target/deploy-tools}"
mkdir -p "$OUT"

# A build is reused while the sum of its inputs is the one it was built from.
build() {
  local name="$1" dir="tests/deploy-tools/$1" pkg="$2" sum
  sum="$(cat "$dir"/go.mod "$dir"/go.sum "$dir"/*.go | sha256sum | cut -c1-16)"
  if [ -x "$OUT/$name" ] && [ "$(cat "$OUT/$name.sum" 2>/dev/null)" = "$sum" ]; then
    echo "$OUT/$name"
    return
  fi
  echo "deploy-tools: building $name (cold: several minutes)" >&2
  (cd "$dir" && nice -n 10 go build -trimpath -o "$OUT/$name.new" "$pkg")
  mv "$OUT/$name.new" "$OUT/$name"
  echo "$sum" > "$OUT/$name.sum"
  echo "$OUT/$name"
}

# ARC's chart sources at one commit, into $OUT/arc/<commit>/charts.
arc_charts() {
  local commit="$1" dest="$OUT/arc/$1"
  if [ -f "$dest/charts/gha-runner-scale-set/Chart.yaml" ]; then
    echo "$dest"
    return
  fi
  rm -rf "$dest.new" && mkdir -p "$dest.new"
  if [ -n "${ARC_GIT_DIR:-}" ]; then
    git --git-dir="$ARC_GIT_DIR" archive "$commit" charts/gha-runner-scale-set charts/gha-runner-scale-set-controller \
      | tar -x -C "$dest.new"
  else
    local dir
    dir="$(cd tests/deploy-tools/helm && go mod download -json "github.com/actions/actions-runner-controller@$commit" \
             | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [ -n "$dir" ] || { echo "deploy-tools: ARC $commit is not downloadable; set ARC_GIT_DIR to a git directory of it" >&2; exit 1; }
    cp -r "$dir/charts" "$dest.new/" && chmod -R u+w "$dest.new"
  fi
  rm -rf "$dest" && mv "$dest.new" "$dest"
  echo "$dest"
}

[ $# -gt 0 ] || set -- vault helm arc
for tool; do
  case "$tool" in
    vault) build vault . ;;
    helm) build helm helm.sh/helm/v3/cmd/helm ;;
    arc) arc_charts "$ARC_COMMIT"; arc_charts "$ARC_PREVIOUS_COMMIT" ;;
    *) echo "deploy-tools: unknown tool $tool (vault, helm, arc)" >&2; exit 2 ;;
  esac
done
