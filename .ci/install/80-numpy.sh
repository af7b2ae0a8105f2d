# Debian's python3-numpy: internal/npy's test checks that numpy.load reads the embeddings data score writes
# (OUT.emb.npy) and that we read numpy.save's files. Sourced by .ci/run; without it the test skips.
if ! /usr/bin/python3 -c "import numpy" >/dev/null 2>&1; then
  if ! (timeout 600 apt-get install -y --no-install-recommends python3-numpy >/dev/null 2>&1 ||
        { timeout 300 apt-get update >/dev/null 2>&1 && timeout 600 apt-get install -y --no-install-recommends python3-numpy >/dev/null 2>&1; }); then
    echo "apt-get install python3-numpy failed; the numpy interoperability test will be skipped"
  fi
fi
export LORAKIT_NUMPY_PYTHON=/usr/bin/python3
