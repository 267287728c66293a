#!/bin/sh
# Compose's one-shot minio-init: the bucket, and the app's own access key, allowed that bucket
# and nothing else, so the app never holds MinIO's root credentials. Safe to run again.
# Shell built-ins and mc only: the mc image has little else.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$S3_BUCKET"
policy=/tmp/tenantry-app-policy.json
printf '%s\n' "{\"Version\": \"2012-10-17\", \"Statement\": [{\"Effect\": \"Allow\",
  \"Action\": [\"s3:*\"],
  \"Resource\": [\"arn:aws:s3:::$S3_BUCKET\", \"arn:aws:s3:::$S3_BUCKET/*\"]}]}" > "$policy"
mc admin policy create local tenantry-app "$policy"
mc admin user add local "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
# Attaching a policy the user already has is an error, hence the look first.
case "$(mc admin user info local "$S3_ACCESS_KEY_ID")" in
  *tenantry-app*) ;;
  *) mc admin policy attach local tenantry-app --user "$S3_ACCESS_KEY_ID" ;;
esac
echo "minio-init: bucket $S3_BUCKET and the app's key ready"
