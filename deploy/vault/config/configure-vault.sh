#!/bin/sh
# Configures Vault for the CI platform; idempotent, so it is safe to run again after any change to
# the policies or roles. Run by the vault-configure Job (../configure-job.yaml), which mounts:
#   /config/policies/*.hcl          ACL policies, one per file, named after the file
#   /config/jwt-roles/*.json        auth/jwt roles (GitHub Actions OIDC), named after the file
#   /config/kubernetes-roles/*.json auth/kubernetes roles, named after the file
# and sets VAULT_ADDR, VAULT_CACERT and VAULT_TOKEN (a token with policy vault-configurer).
#
# What it sets up:
#   - KV v2 secrets engine at ci/
#   - JWT auth at jwt/, trusting GitHub's OIDC issuer
#   - Kubernetes auth at kubernetes/, validating tokens with Vault's own service account
#   - a file audit device writing to the audit volume
#   - the policies and roles in /config
# POSIX sh: the Vault image has busybox, not bash.
set -eu

CONFIG_DIR="${CONFIG_DIR:-/config}"
GITHUB_OIDC_ISSUER="${GITHUB_OIDC_ISSUER:-https://token.actions.githubusercontent.com}"
KUBERNETES_HOST="${KUBERNETES_HOST:-https://kubernetes.default.svc}"

log() { printf 'configure-vault: %s\n' "$*"; }
fail() { printf 'configure-vault: %s\n' "$*" >&2; exit 1; }

[ -n "${VAULT_TOKEN:-}" ] || fail "VAULT_TOKEN is empty: create Secret vault-configurer-token (README: Configure Vault)"
vault token lookup >/dev/null 2>&1 || fail "VAULT_TOKEN is not valid at $VAULT_ADDR (expired? create a new one)"

# Secrets engine.
if vault read sys/mounts/ci >/dev/null 2>&1; then
  log "ci/ (kv-v2) already enabled"
else
  vault secrets enable -path=ci -version=2 -description="CI secrets and image tags" kv
  log "enabled ci/ (kv-v2)"
fi

# Auth methods.
for method in jwt kubernetes; do
  if vault read "sys/auth/$method" >/dev/null 2>&1; then
    log "auth $method/ already enabled"
  else
    vault auth enable -path="$method" "$method"
    log "enabled auth $method/"
  fi
done

vault write auth/jwt/config \
  oidc_discovery_url="$GITHUB_OIDC_ISSUER" \
  bound_issuer="$GITHUB_OIDC_ISSUER" >/dev/null
log "auth/jwt/config: issuer $GITHUB_OIDC_ISSUER"

# Vault runs in the cluster: it reviews tokens with its own service account (the chart's
# server.authDelegator gives it system:auth-delegator), so no reviewer JWT is stored here.
vault write auth/kubernetes/config kubernetes_host="$KUBERNETES_HOST" >/dev/null
log "auth/kubernetes/config: $KUBERNETES_HOST"

# Audit: every request, hashed secrets. /vault/audit is the chart's auditStorage volume.
if vault read sys/audit >/dev/null 2>&1 && vault read -format=json sys/audit | grep -q '"file/"'; then
  log "audit device file/ already enabled"
else
  vault audit enable file file_path=/vault/audit/audit.log
  log "enabled audit device file/"
fi

# Policies. Templated policies name the jwt mount's accessor.
jwt_accessor="$(vault read -field=accessor sys/auth/jwt)"
[ -n "$jwt_accessor" ] || fail "could not read the accessor of auth/jwt"
count=0
for file in "$CONFIG_DIR"/policies/*.hcl; do
  [ -e "$file" ] || fail "no policies in $CONFIG_DIR/policies"
  name="$(basename "$file" .hcl)"
  sed "s/@JWT_ACCESSOR@/$jwt_accessor/g" "$file" | vault policy write "$name" - >/dev/null
  log "policy $name"
  count=$((count + 1))
done

# Roles: each JSON file is the role's full definition, written as is.
for kind in jwt kubernetes; do
  for file in "$CONFIG_DIR/$kind-roles"/*.json; do
    [ -e "$file" ] || fail "no roles in $CONFIG_DIR/$kind-roles"
    name="$(basename "$file" .json)"
    vault write "auth/$kind/role/$name" @"$file" >/dev/null
    log "auth/$kind/role/$name"
    count=$((count + 1))
  done
done

log "done: $count policies and roles applied"
