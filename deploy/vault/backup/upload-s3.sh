#!/bin/sh
# Step 2a of the daily backup (AWS CLI image): upload the snapshot and its checksum to S3 and check
# the upload. It deletes nothing and needs no delete right: the bucket keeps generations itself
# (versioning on, and s3-lifecycle.json expiring snapshots after the retention period), so a
# compromised or buggy backup job cannot remove the good ones. s3-backup-policy.json is its IAM policy.
#   S3_BUCKET, S3_PREFIX; credentials from AWS_* variables (Secret vault-backup-s3)
#   AWS_ENDPOINT_URL optional, for an S3-compatible endpoint other than AWS
set -eu
log() { printf 'upload-s3: %s\n' "$*"; }
: "${S3_BUCKET:?}" "${S3_PREFIX:?}" "${BACKUP_DIR:=/backup}"

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
log "uploaded s3://$S3_BUCKET/$S3_PREFIX/$name ($local_size bytes); the bucket's lifecycle expires old ones"
