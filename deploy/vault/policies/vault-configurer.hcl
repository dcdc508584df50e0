# The token the vault-configure Job runs with (README "Configure Vault": an operator creates it with
#   vault token create -policy=vault-configurer -ttl=1h -use-limit=200 -format=json
# and stores the token in Secret vault-configurer-token). Enough to set up what configure-vault.sh
# sets up, and not to read or write a single secret.
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
path "sys/policies/acl/*" {
  capabilities = ["create", "read", "update", "list"]
}
path "auth/jwt/config" {
  capabilities = ["create", "read", "update"]
}
path "auth/jwt/role/*" {
  capabilities = ["create", "read", "update", "list"]
}
path "auth/kubernetes/config" {
  capabilities = ["create", "read", "update"]
}
path "auth/kubernetes/role/*" {
  capabilities = ["create", "read", "update", "list"]
}
