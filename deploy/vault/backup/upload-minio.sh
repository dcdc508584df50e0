#!/bin/sh
# Step 2b of the weekly backup (MinIO client image): upload the snapshot and its checksum to MinIO,
# check the upload, then delete snapshots older than RETENTION_DAYS under the same prefix. Pruning
# runs only after a verified upload, so a failing backup never deletes the last good one.
#   MINIO_ENDPOINT, MINIO_BUCKET, MINIO_PREFIX, RETENTION_DAYS;
#   MINIO_ACCESS_KEY, MINIO_SECRET_KEY from Secret vault-backup-minio
set -eu
log() { printf 'upload-minio: %s\n' "$*"; }
: "${MINIO_ENDPOINT:?}" "${MINIO_BUCKET:?}" "${MINIO_PREFIX:?}" "${RETENTION_DAYS:?}" "${BACKUP_DIR:=/backup}"
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
log "uploaded $target/$name ($local_size bytes)"

# To a file, not a pipe: POSIX sh has no pipefail, and a failed prune must fail the job.
mc rm --recursive --force --older-than "${RETENTION_DAYS}d" "$target/" > /tmp/pruned
while IFS= read -r line; do log "pruned $line"; done < /tmp/pruned
log "retention ${RETENTION_DAYS}d applied to $target/"
