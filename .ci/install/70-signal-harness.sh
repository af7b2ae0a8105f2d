# The SIGINT harness of cmd/lorakit (signal_test.go): three interrupted runs of each long command in CI
# (a plain go test runs one; LORAKIT_SIGNAL_RUNS=20 is the full check).
export LORAKIT_SIGNAL_RUNS=3
