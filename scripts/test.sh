#!/usr/bin/env bash
# The project's test command (README "Run the tests"): formatting, lints, every Rust test
# (unit, golden, end-to-end against the embedded simulator with the real kubectl), the static
# binaries the images ship, the offline validation of deploy/ and its alert rules' unit tests.
# It first installs what this machine lacks (scripts/setup.sh says what; ARC_HOOK_TEST_NO_INSTALL=1
# installs nothing and names what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --check

echo "== shellcheck (the scripts, and the step follower the hook sends into pods)"
shellcheck scripts/*.sh src/hooks/steps/follow_step.sh
# The stop programs are stop_lib.sh followed by their own part, as the hook sends them.
for stop in src/hooks/steps/stop_step.sh src/hooks/steps/stop_container.sh; do
  cat src/hooks/steps/stop_lib.sh "$stop" | shellcheck -s sh -
done

echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo clippy (the runner image's build: the hook alone)"
cargo clippy --locked --lib --bins --no-default-features -- -D warnings

echo "== cargo nextest"
cargo nextest run --locked --no-fail-fast

echo "== the runner image's binary"
scripts/build-release.sh runner --check
# One whole recorded job, every command through scripts/arc-hook.sh into the static binary.
cargo run --locked --quiet -- replay fixtures/jobs/build-and-test --hook-binary dist/runner/arc-hook

echo "== the exporter image's binary"
scripts/build-release.sh exporter --check

if [ -f scripts/check-deploy.py ]; then
  echo "== deploy/ validation"
  python3 scripts/check-deploy.py
fi

echo "== alert rules (promtool check + unit tests)"
scripts/check-rules.sh
