# The weekly backup CronJob (Kubernetes auth role vault-backup): take a raft snapshot.
path "sys/storage/raft/snapshot" {
  capabilities = ["read"]
}
