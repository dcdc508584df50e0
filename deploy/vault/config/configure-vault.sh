#!/bin/sh
# Makes Vault's configuration match git, for the CI platform; converges, so running it again after any
# change (or after a restore) leaves Vault exactly as git says. Run by the vault-configure Job
# (../configure-job.yaml), which mounts:
#   /config/policies/*.hcl          ACL policies, one per file, named after the file
#   /config/jwt-roles/*.json        auth/jwt roles (GitHub Actions OIDC), named after the file
#   /config/kubernetes-roles/*.json auth/kubernetes roles, named after the file
# and sets VAULT_ADDR, VAULT_CACERT, VAULT_TOKEN (an operator-issued token with policy vault-configurer)
# and GITHUB_OIDC_ISSUER (ConfigMap vault-oidc-issuer, kustomization.yaml).
#
# What it sets up:
#   - KV v2 secrets engine at ci/
#   - JWT auth at jwt/, trusting GITHUB_OIDC_ISSUER (GitHub Enterprise Server: https://<host>/_services/token)
#   - Kubernetes auth at kubernetes/, validating tokens with Vault's own service account
#   - a file audit device writing to the audit volume
#   - the policies and roles in /config, and nothing else of what it manages:
#       * a role is deleted and written again from its file, because a role write merges into the
#         stored role (fields absent from the file would keep their old values);
#       * a managed policy or role that git no longer has is deleted. "Managed" means: policy
#         vault-configurer lets this token delete it (asked with `vault token capabilities`).
#         Others are reported and left alone.
#
# DRY_RUN=true (or --dry-run): change nothing, print what would change (policy text as a diff).
# POSIX sh: the Vault image has busybox, not bash.
set -eu

CONFIG_DIR="${CONFIG_DIR:-/config}"
KUBERNETES_HOST="${KUBERNETES_HOST:-https://kubernetes.default.svc}"
DRY_RUN="${DRY_RUN:-false}"
[ "${1:-}" = "--dry-run" ] && DRY_RUN=true

log() { printf 'configure-vault: %s\n' "$*"; }
fail() { printf 'configure-vault: %s\n' "$*" >&2; exit 1; }
dry() { [ "$DRY_RUN" = true ]; }
# One place decides whether a change is made or only announced.
apply() {
  if dry; then log "would: $*"; else "$@" >/dev/null; fi
}

[ -n "${VAULT_TOKEN:-}" ] || fail "VAULT_TOKEN is empty: create Secret vault-configurer-token (RESTORE.md: Running the configuration)"
vault token lookup >/dev/null 2>&1 || fail "VAULT_TOKEN is not valid at $VAULT_ADDR (expired? create a new one)"
[ -n "${GITHUB_OIDC_ISSUER:-}" ] || fail "GITHUB_OIDC_ISSUER is empty: set it in kustomization.yaml (ConfigMap vault-oidc-issuer)"
case "$GITHUB_OIDC_ISSUER" in
  https://token.actions.githubusercontent.com|https://*/_services/token) ;;
  *) fail "GITHUB_OIDC_ISSUER=$GITHUB_OIDC_ISSUER is neither GitHub's (https://token.actions.githubusercontent.com) nor a GitHub Enterprise Server's (https://<host>/_services/token)" ;;
esac
dry && log "dry run: nothing is changed"

# Names of a JSON list from `vault list -format=json` (no jq in the Vault image).
list_names() { vault list -format=json "$1" 2>/dev/null | sed -n 's/^ *"\(.*\)",\{0,1\}$/\1/p'; }
managed() {
  case ", $(vault token capabilities "$1"), " in *", delete, "*) return 0 ;; *) return 1 ;; esac
}

# Secrets engine.
if vault read sys/mounts/ci >/dev/null 2>&1; then
  log "ci/ (kv-v2) already enabled"
else
  apply vault secrets enable -path=ci -version=2 -description="CI secrets and image tags" kv
  dry || log "enabled ci/ (kv-v2)"
fi

# Auth methods.
for method in jwt kubernetes; do
  if vault read "sys/auth/$method" >/dev/null 2>&1; then
    log "auth $method/ already enabled"
  else
    apply vault auth enable -path="$method" "$method"
    dry || log "enabled auth $method/"
  fi
done

# Vault fetches the issuer's discovery document when this is written: the NetworkPolicy
# vault-server-egress must let the servers reach it (kustomization.yaml, vault-oidc-issuer).
apply vault write auth/jwt/config oidc_discovery_url="$GITHUB_OIDC_ISSUER" bound_issuer="$GITHUB_OIDC_ISSUER"
log "auth/jwt/config: issuer $GITHUB_OIDC_ISSUER"

# Vault runs in the cluster: it reviews tokens with its own service account (the chart's
# server.authDelegator gives it system:auth-delegator), so no reviewer JWT is stored here.
# KUBERNETES_CA_CERT (a PEM file) is for a Vault outside the cluster, which has no service-account CA.
if [ -n "${KUBERNETES_CA_CERT:-}" ]; then
  apply vault write auth/kubernetes/config kubernetes_host="$KUBERNETES_HOST" kubernetes_ca_cert=@"$KUBERNETES_CA_CERT"
else
  apply vault write auth/kubernetes/config kubernetes_host="$KUBERNETES_HOST"
fi
log "auth/kubernetes/config: $KUBERNETES_HOST"

# Audit: every request, hashed secrets, to stdout (the container log, rotated by the kubelet and
# shipped by the log pipeline): a file device on a volume fills it and then stops Vault.
if vault read -format=json sys/audit 2>/dev/null | grep -q '"file/"'; then
  log "audit device file/ already enabled"
else
  apply vault audit enable file file_path=stdout
  dry || log "enabled audit device file/"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Policies. Templated policies name the jwt mount's accessor. vault-configurer is the operator's.
jwt_accessor="$(vault read -field=accessor sys/auth/jwt 2>/dev/null)" || jwt_accessor=""
if [ -z "$jwt_accessor" ]; then
  dry || fail "could not read the accessor of auth/jwt"
  jwt_accessor=ACCESSOR-OF-THE-NEW-JWT-MOUNT
fi
changes=0
: > "$work/policies"
for file in "$CONFIG_DIR"/policies/*.hcl; do
  [ -e "$file" ] || fail "no policies in $CONFIG_DIR/policies"
  name="$(basename "$file" .hcl)"
  [ "$name" = vault-configurer ] && continue
  echo "$name" >> "$work/policies"
  sed "s/@JWT_ACCESSOR@/$jwt_accessor/g" "$file" > "$work/want.hcl"
  vault read -field=policy "sys/policies/acl/$name" > "$work/have.hcl" 2>/dev/null || : > "$work/have.hcl"
  # Blank lines aside (the CLI adds a newline to a field), the stored text is what was written.
  if [ "$(grep -v '^[[:space:]]*$' "$work/want.hcl")" = "$(grep -v '^[[:space:]]*$' "$work/have.hcl")" ]; then
    log "policy $name unchanged"
    continue
  fi
  if dry; then
    diff -u "$work/have.hcl" "$work/want.hcl" | tail -n +3 | sed "s|^|  $name: |"
  fi
  apply vault write "sys/policies/acl/$name" policy=@"$work/want.hcl"
  dry || log "policy $name written"
  changes=$((changes + 1))
done
for name in $(list_names sys/policies/acl); do
  grep -qx "$name" "$work/policies" && continue
  if managed "sys/policies/acl/$name"; then
    apply vault delete "sys/policies/acl/$name"
    dry || log "policy $name deleted: no longer in git"
    changes=$((changes + 1))
  else
    log "policy $name left alone: not managed here"
  fi
done

# Roles: delete and write again, so the stored role is exactly the file.
for kind in jwt kubernetes; do
  : > "$work/roles"
  for file in "$CONFIG_DIR/$kind-roles"/*.json; do
    [ -e "$file" ] || fail "no roles in $CONFIG_DIR/$kind-roles"
    name="$(basename "$file" .json)"
    echo "$name" >> "$work/roles"
    if vault read "auth/$kind/role/$name" >/dev/null 2>&1; then
      dry && log "auth/$kind/role/$name: replaced by $file (fields the file lacks are dropped)"
      apply vault delete "auth/$kind/role/$name"
    fi
    apply vault write "auth/$kind/role/$name" @"$file"
    dry || log "auth/$kind/role/$name written"
    changes=$((changes + 1))
  done
  for name in $(list_names "auth/$kind/role"); do
    grep -qx "$name" "$work/roles" && continue
    if managed "auth/$kind/role/$name"; then
      apply vault delete "auth/$kind/role/$name"
      dry || log "auth/$kind/role/$name deleted: no longer in git"
      changes=$((changes + 1))
    else
      log "auth/$kind/role/$name left alone: not managed here"
    fi
  done
done

if dry; then log "dry run done: $changes change(s) above"; else log "done: $changes change(s) applied"; fi
