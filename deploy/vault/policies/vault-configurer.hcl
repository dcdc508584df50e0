# The token the vault-configure Job runs with: short-lived and issued by an operator for one run
# (RESTORE.md "Running the configuration"):
#   vault token create -policy=vault-configurer -ttl=1h -use-limit=200 -format=json
# stored in Secret vault-configurer-token and deleted after the run. It cannot read or write a
# secret, and it can write only the policies and roles this repository manages, each named below.
#
# Never its own policy, nor `default` (which its token also carries): Vault looks a token's policies
# up on every request (vault/policy_store.go), so a token that may rewrite one of its own policies
# may grant itself anything, at once. This policy is therefore applied by an operator with a
# privileged token, never by configure-vault.sh (which skips it):
#   vault policy write vault-configurer deploy/vault/policies/vault-configurer.hcl
#
# A name listed here with `delete` is "managed": configure-vault.sh deletes it from Vault when git no
# longer has its file. To retire one: delete its file, run the configuration (it is removed), then
# remove its block here. A new policy or role needs its block here first.
path "sys/mounts" {
  capabilities = ["read"]
}
path "sys/mounts/ci" {
  capabilities = ["create", "read", "update"]
}
path "sys/auth" {
  capabilities = ["read"]
}
path "sys/auth/jwt" {
  capabilities = ["create", "read", "update", "sudo"]
}
path "sys/auth/kubernetes" {
  capabilities = ["create", "read", "update", "sudo"]
}
path "sys/audit" {
  capabilities = ["read", "sudo"]
}
path "sys/audit/file" {
  capabilities = ["create", "read", "update", "sudo"]
}
path "auth/jwt/config" {
  capabilities = ["create", "read", "update"]
}
path "auth/kubernetes/config" {
  capabilities = ["create", "read", "update"]
}

# Listing and reading policies and roles, to find what changed and what git no longer has.
path "sys/policies/acl" {
  capabilities = ["list"]
}
path "sys/policies/acl/*" {
  capabilities = ["read"]
}
path "auth/jwt/role" {
  capabilities = ["list"]
}
path "auth/jwt/role/*" {
  capabilities = ["read"]
}
path "auth/kubernetes/role" {
  capabilities = ["list"]
}
path "auth/kubernetes/role/*" {
  capabilities = ["read"]
}

# The managed policies (policies/*.hcl except this one).
path "sys/policies/acl/developer-portal" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/policies/acl/gha-ci-read" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/policies/acl/gha-image-tags-read" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/policies/acl/gha-image-tags-write" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/policies/acl/gha-production-read" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/policies/acl/gha-registry-push" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/policies/acl/vault-backup" {
  capabilities = ["create", "read", "update", "delete"]
}

# The managed JWT roles (config/jwt-roles/*.json).
path "auth/jwt/role/gha-ci" {
  capabilities = ["create", "read", "update", "delete"]
}
path "auth/jwt/role/gha-image-tags-read" {
  capabilities = ["create", "read", "update", "delete"]
}
path "auth/jwt/role/gha-image-tags-write" {
  capabilities = ["create", "read", "update", "delete"]
}
path "auth/jwt/role/gha-production" {
  capabilities = ["create", "read", "update", "delete"]
}
path "auth/jwt/role/gha-pull-request" {
  capabilities = ["create", "read", "update", "delete"]
}
path "auth/jwt/role/gha-registry-push" {
  capabilities = ["create", "read", "update", "delete"]
}

# The managed Kubernetes roles (config/kubernetes-roles/*.json).
path "auth/kubernetes/role/developer-portal" {
  capabilities = ["create", "read", "update", "delete"]
}
path "auth/kubernetes/role/vault-backup" {
  capabilities = ["create", "read", "update", "delete"]
}
