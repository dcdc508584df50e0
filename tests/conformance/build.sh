#!/usr/bin/env bash
# Builds the conformance multi-call binary to OUT (default ../../target/conformance/conformance) with the
# version ldflags of kubernetes' hack/lib/version.sh, so /version reports the release it was built from.
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-../../target/conformance/conformance}
version=$(sed -n 's/^KUBE_VERSION=//p' VERSION)
minor=${version#v1.}
minor=${minor%%.*}
ldflags=()
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ldflags+=("-X '${pkg}.gitVersion=${version}'" "-X '${pkg}.gitMajor=1'" "-X '${pkg}.gitMinor=${minor}'"
    "-X '${pkg}.gitTreeState=clean'" "-X '${pkg}.buildDate=1970-01-01T00:00:00Z'")
done
mkdir -p "$(dirname "$out")"
go build -trimpath -ldflags="-s -w ${ldflags[*]}" -o "$out" ./cmd/conformance
