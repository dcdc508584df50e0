#!/bin/sh
# Step 2b of the daily backup (MinIO client image): upload the snapshot and its checksum to MinIO and
# check the upload. It deletes nothing and needs no delete right: the bucket keeps generations itself
# (versioning on, and an ILM rule expiring snapshots after the retention period; README "Vault
# backup buckets"); minio-backup-policy.json is its MinIO policy.
#   MINIO_ENDPOINT, MINIO_BUCKET, MINIO_PREFIX;
#   MINIO_ACCESS_KEY, MINIO_SECRET_KEY from Secret vault-backup-minio
set -eu
log() { printf 'upload-minio: %s\n' "$*"; }
: "${MINIO_ENDPOINT:?}" "${MINIO_BUCKET:?}" "${MINIO_PREFIX:?}" "${BACKUP_DIR:=/backup}"
: "${MINIO_ACCESS_KEY:?}" "${MINIO_SECRET_KEY:?}"

mc alias set backup "$MINIO_ENDPOINT" "$MINIO_ACCESS_KEY" "$MINIO_SECRET_KEY" --api S3v4 >/dev/null
name="$(cat "$BACKUP_DIR/CURRENT")"
target="backup/$MINIO_BUCKET/$MINIO_PREFIX"
for file in "$name" "$name.sha256"; do
  mc cp --quiet "$BACKUP_DIR/$file" "$target/$file" >/dev/null
done
# Shell expansion instead of sed/jq: the mc image is minimal.
stat_json="$(mc stat --json "$target/$name")"
remote_size="${stat_json#*\"size\":}"
remote_size="${remote_size%%[!0-9]*}"
local_size="$(wc -c < "$BACKUP_DIR/$name" | tr -d ' ')"
if [ "$remote_size" != "$local_size" ]; then
  echo "upload-minio: $target/$name has '$remote_size' bytes, expected $local_size" >&2
  exit 1
fi
log "uploaded $target/$name ($local_size bytes); the bucket's lifecycle expires old ones"
