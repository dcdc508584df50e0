#!/bin/sh
# Step 2a of the weekly backup (AWS CLI image): upload the snapshot and its checksum to S3, check the
# upload, then delete snapshots older than RETENTION_DAYS under the same prefix. Pruning runs only
# after a verified upload, so a failing backup never deletes the last good one.
#   S3_BUCKET, S3_PREFIX, RETENTION_DAYS; credentials from AWS_* variables (Secret vault-backup-s3)
#   AWS_ENDPOINT_URL optional, for an S3-compatible endpoint other than AWS
set -eu
log() { printf 'upload-s3: %s\n' "$*"; }
: "${S3_BUCKET:?}" "${S3_PREFIX:?}" "${RETENTION_DAYS:?}" "${BACKUP_DIR:=/backup}"

name="$(cat "$BACKUP_DIR/CURRENT")"
for file in "$name" "$name.sha256"; do
  aws s3 cp --only-show-errors --sse AES256 "$BACKUP_DIR/$file" "s3://$S3_BUCKET/$S3_PREFIX/$file"
done
remote_size="$(aws s3api head-object --bucket "$S3_BUCKET" --key "$S3_PREFIX/$name" --query ContentLength --output text)"
local_size="$(wc -c < "$BACKUP_DIR/$name" | tr -d ' ')"
if [ "$remote_size" != "$local_size" ]; then
  echo "upload-s3: s3://$S3_BUCKET/$S3_PREFIX/$name has $remote_size bytes, expected $local_size" >&2
  exit 1
fi
log "uploaded s3://$S3_BUCKET/$S3_PREFIX/$name ($local_size bytes)"

cutoff="$(date -u -d "$RETENTION_DAYS days ago" +%s)"
pruned=0
aws s3api list-objects-v2 --bucket "$S3_BUCKET" --prefix "$S3_PREFIX/vault-raft-" \
    --query 'Contents[].[Key, LastModified]' --output text > /tmp/objects
while IFS="$(printf '\t')" read -r key modified; do
  case "$key" in ""|None) continue ;; esac
  if [ "$(date -u -d "$modified" +%s)" -lt "$cutoff" ]; then
    aws s3 rm --only-show-errors "s3://$S3_BUCKET/$key"
    log "pruned s3://$S3_BUCKET/$key (last modified $modified)"
    pruned=$((pruned + 1))
  fi
done < /tmp/objects
log "retention ${RETENTION_DAYS}d: pruned $pruned object(s)"
