# Debian's prometheus package: promtool lints /metrics (serve's TestPromtoolCheckMetrics) and the prometheus server
# scrapes three lorakit replicas in .ci/check/40-prometheus-replicas.sh. Sourced by .ci/run.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  if ! (timeout 600 apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 ||
        { timeout 300 apt-get update >/dev/null 2>&1 && timeout 600 apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1; }); then
    echo "apt-get install prometheus failed; the promtool lint and the Prometheus scrape check will be skipped"
  fi
fi
