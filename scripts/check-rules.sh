#!/usr/bin/env bash
# Checks every PrometheusRule under deploy/ with the real promtool (Debian package `prometheus`):
# `promtool check rules` on each rule file, then `promtool test rules` on the unit tests beside it.
#
# Convention: deploy/<dir>/prometheusrule.yaml is a PrometheusRule; its tests live in
# deploy/<dir>/rules-tests/*.yaml and name the extracted groups as `rule_files: [rules.yaml]`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
  echo "promtool not found: install the Debian package 'prometheus'" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

status=0
tested=0
for rule in deploy/*/prometheusrule.yaml; do
  dir=$(dirname "$rule")
  name=$(basename "$dir")
  mkdir -p "$work/$name"
  # A PrometheusRule's spec is exactly a Prometheus rule file ({groups: [...]}).
  python3 - "$rule" "$work/$name/rules.yaml" <<'PY'
import sys, yaml
with open(sys.argv[1]) as f:
    doc = yaml.safe_load(f)
if doc.get("kind") != "PrometheusRule":
    sys.exit(f"{sys.argv[1]}: not a PrometheusRule")
with open(sys.argv[2], "w") as f:
    yaml.safe_dump(doc["spec"], f, sort_keys=False)
PY
  echo "-- promtool check rules $rule"
  promtool check rules "$work/$name/rules.yaml" || status=1
  if compgen -G "$dir/rules-tests/*.yaml" >/dev/null; then
    cp "$dir"/rules-tests/*.yaml "$work/$name/"
    for t in "$dir"/rules-tests/*.yaml; do
      echo "-- promtool test rules $t"
      (cd "$work/$name" && promtool test rules "$(basename "$t")") || status=1
      tested=$((tested + 1))
    done
  else
    echo "$rule: no unit tests in $dir/rules-tests/" >&2
    status=1
  fi
done
echo "rule test files run: $tested"
exit $status
