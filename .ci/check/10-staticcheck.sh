#!/usr/bin/env bash
# Lint: staticcheck at a pinned version (its default checks), and the complexity ratchet: no function of the
# non-test code above cyclomatic 30 unless a "complexity:" line of its doc comment says why (internal/cyclo).
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "staticcheck v0.8.2"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
echo "complexity ratchet (cyclomatic <= 30)"
go run ./internal/cyclo .
