#!/usr/bin/env bash
# deploy/: the Dockerfile's build stage as a plain static build (no Docker daemon in CI), then the separate
# conformance module: the manifests decode strictly into the Kubernetes, Gateway API, Inference Extension and
# Prometheus Operator types, and the endpoint picker's own metrics client reads lorakit's /metrics.
set -euo pipefail
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$out/lorakit" ./cmd/lorakit
if command -v readelf >/dev/null 2>&1 && readelf -l "$out/lorakit" | grep -q INTERP; then
  echo "deploy: the CGO_ENABLED=0 build is dynamically linked; the distroless static image cannot run it"; exit 1
fi
"$out/lorakit" --help >/dev/null
(cd deploy/conformance && GOFLAGS=-mod=mod go vet ./... && go test -count=1 ./...)
