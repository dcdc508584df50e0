#!/usr/bin/env bash
# The project's test command (README "Run the tests"): formatting, lints, every Rust test
# (unit, golden, end-to-end against the embedded simulator with the real kubectl), and the
# offline validation of deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --check

echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo nextest"
cargo nextest run --locked --no-fail-fast

if [ -f scripts/check-deploy.py ]; then
  echo "== deploy/ validation"
  python3 scripts/check-deploy.py
fi

echo "== alert rules (promtool check + unit tests)"
scripts/check-rules.sh
