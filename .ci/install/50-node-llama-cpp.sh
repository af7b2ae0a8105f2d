# node-llama-cpp (prebuilt llama.cpp binaries for linux-x64) and @huggingface/gguf, pinned, for the GGUF export
# and import checks in models/ggufconv: a real llama.cpp and an independent GGUF parser. Sourced by .ci/run.
if command -v npm >/dev/null 2>&1; then
  nlcdir=$(mktemp -d)
  if (cd "$nlcdir" && npm init -y >/dev/null && timeout 600 npm install --silent --no-audit --no-fund -E \
      node-llama-cpp@3.21.1 @huggingface/gguf@0.4.6 >/dev/null 2>&1); then
    export LORAKIT_NODE_LLAMA_CPP="$nlcdir/node_modules"
  else
    echo "npm install node-llama-cpp failed; the llama.cpp GGUF checks will be skipped"
  fi
else
  echo "npm not found; the llama.cpp GGUF checks will be skipped"
fi
