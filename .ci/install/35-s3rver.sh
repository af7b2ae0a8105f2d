# s3rver (npm), an S3-compatible server run as a separate process by cmd/lorakit's S3 end-to-end test
# (TestS3EndToEnd), installed into a temporary folder. Sourced by .ci/run; exports LORAKIT_S3RVER.
if command -v npm >/dev/null 2>&1; then
  s3dir=$(mktemp -d)
  if (cd "$s3dir" && npm init -y >/dev/null && timeout 300 npm install --silent --no-audit --no-fund s3rver@3.7.1 >/dev/null 2>&1); then
    export LORAKIT_S3RVER="$s3dir/node_modules/.bin/s3rver"
  else
    echo "npm install s3rver failed; the S3 end-to-end test will be skipped"
  fi
else
  echo "npm not found; the S3 end-to-end test will be skipped"
fi
