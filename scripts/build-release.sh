#!/usr/bin/env bash
# Builds the static binaries the images ship; the Dockerfiles and CI both call this, so they cannot
# drift.
#
#   scripts/build-release.sh runner|exporter [--check]
#
#   runner    the hook alone (+ `render`): no simulator, no exporter  -> dist/runner/arc-hook
#   exporter  the GitHub Actions exporter                              -> dist/exporter/arc-hook
#   --check   also verify the result: statically linked, `--version` runs, and its size
#
# The target is the musl target of this machine's architecture (x86_64 or aarch64), so a
# multi-platform image build compiles each architecture natively; ARC_HOOK_TARGET overrides it.
# Needs the target's std (`rustup target add <target>`) and musl-gcc (Debian: musl-tools), since
# ring compiles C.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: $0 runner|exporter [--check]" >&2
  exit 2
}

kind=${1:-}
check=false
case "${2:-}" in
  "") ;;
  --check) check=true ;;
  *) usage ;;
esac
case "$kind" in
  runner) features=() ;;
  exporter) features=(--features exporter) ;;
  *) usage ;;
esac

target=${ARC_HOOK_TARGET:-$(uname -m)-unknown-linux-musl}
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "missing Rust target $target: rustup target add $target" >&2
  exit 1
fi
if ! command -v musl-gcc >/dev/null; then
  echo "missing musl-gcc: apt-get install musl-tools" >&2
  exit 1
fi

# The release profile strips symbols (Cargo.toml), so the binary is ready to ship as built.
cargo build --release --locked --bin arc-hook --no-default-features "${features[@]}" --target "$target"

out="dist/$kind"
mkdir -p "$out"
cp "target/$target/release/arc-hook" "$out/arc-hook"
bin="$out/arc-hook"

if $check; then
  # A static executable has no program interpreter (the dynamic loader) and no needed libraries.
  if readelf -l "$bin" | grep -q 'INTERP' || readelf -d "$bin" | grep -q 'NEEDED'; then
    echo "$bin is dynamically linked; the runner image needs a static binary" >&2
    readelf -d "$bin" | grep NEEDED >&2 || true
    exit 1
  fi
  if readelf -S "$bin" | grep -q '\.symtab'; then
    echo "$bin still has its symbol table: the release profile should strip it" >&2
    exit 1
  fi
  "$bin" --version
  # The binary holds only what its image needs.
  help=$("$bin" --help)
  for cmd in sim replay exporter; do
    want=false
    [ "$kind" = exporter ] && [ "$cmd" = exporter ] && want=true
    if grep -qE "^  $cmd( |$)" <<<"$help"; then has=true; else has=false; fi
    if [ "$has" != "$want" ]; then
      echo "$bin: subcommand '$cmd' present=$has, expected $want for the $kind image" >&2
      exit 1
    fi
  done
fi
size=$(stat -c %s "$bin")
echo "$bin: $target, static, $((size / 1024)) KiB ($size bytes)"
