#!/usr/bin/env bash
# Generated assembly is up to date: rerun every go:generate under models/ (the avo generators of the kernel
# families, each its own module so that avo stays out of lorakit's go.mod) and fail if the committed files differ.
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "go generate ./models/..."
go generate ./models/...
if ! git diff --exit-code --stat -- models; then
  echo "generated files differ from the committed ones: run 'go generate ./models/...' and commit the result" >&2
  exit 1
fi
untracked=$(git ls-files --others --exclude-standard -- models)
if [ -n "$untracked" ]; then
  echo "go generate wrote files that are not committed: $untracked" >&2
  exit 1
fi
