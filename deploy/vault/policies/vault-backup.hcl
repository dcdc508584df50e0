# The daily backup CronJob (Kubernetes auth role vault-backup): take a raft snapshot, then revoke
# its own token. The role sets token_no_default_policy, and revoke-self is otherwise granted only by
# the `default` policy (vault/policy_store.go defaultPolicy), so it is granted here, alone.
path "sys/storage/raft/snapshot" {
  capabilities = ["read"]
}
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
