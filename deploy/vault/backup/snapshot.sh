#!/bin/sh
# Step 1 of the daily backup (init container, Vault image): log in with the pod's projected
# service-account token (Kubernetes auth role vault-backup), save a raft snapshot of the whole
# cluster into /backup, check that Vault can read it back, and write its SHA-256 next to it.
# Writes /backup/CURRENT with the snapshot's file name for the upload containers.
set -eu
log() { printf 'snapshot: %s\n' "$*"; }

: "${VAULT_ADDR:?}" "${BACKUP_DIR:=/backup}" "${SA_TOKEN_FILE:=/var/run/secrets/vault/token}"
[ -s "$SA_TOKEN_FILE" ] || { echo "snapshot: no service-account token at $SA_TOKEN_FILE" >&2; exit 1; }

VAULT_TOKEN="$(vault write -field=token auth/kubernetes/login role=vault-backup jwt=@"$SA_TOKEN_FILE")"
export VAULT_TOKEN
# The token is needed for one request; revoke it however this script ends, and fail the run if
# Vault refuses (policy vault-backup must grant auth/token/revoke-self): a token left valid for its
# whole TTL is a finding, not a detail.
revoke_token() {
  if ! vault token revoke -self >/dev/null; then
    echo "snapshot: could not revoke the Vault token; it stays valid until its TTL (policy vault-backup lacks auth/token/revoke-self?)" >&2
    return 1
  fi
}
on_exit() {
  status=$?
  trap - EXIT
  revoke_token || status=1
  exit "$status"
}
trap on_exit EXIT

name="vault-raft-$(date -u +%Y%m%dT%H%M%SZ).snap"
vault operator raft snapshot save "$BACKUP_DIR/$name"
# Fails on a truncated or corrupt file: better no upload than a backup that cannot be restored. A raft
# snapshot is a gzipped tar of meta.json and state.bin with their SHA256SUMS; checking those needs no
# server (`vault operator raft snapshot inspect` exists only in newer Vault releases, not in OpenBao).
check="$(mktemp -d)"
tar -xzf "$BACKUP_DIR/$name" -C "$check"
(cd "$check" && [ -s state.bin ] && sha256sum -c SHA256SUMS >/dev/null) \
  || { rm -rf "$check"; echo "snapshot: $name fails its own SHA256SUMS: not uploaded" >&2; exit 1; }
rm -rf "$check"
(cd "$BACKUP_DIR" && sha256sum "$name" > "$name.sha256")
printf '%s\n' "$name" > "$BACKUP_DIR/CURRENT"
log "saved $name ($(wc -c < "$BACKUP_DIR/$name") bytes), sha256 $(cut -d' ' -f1 "$BACKUP_DIR/$name.sha256")"
