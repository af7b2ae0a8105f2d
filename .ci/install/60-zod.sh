# zod, beside the openai package .ci/run installs (NODE_PATH), for serve's TestOpenAINodeStructured: the SDK's
# zodResponseFormat / zodFunction helpers need it. Sourced by .ci/run.
if [ -n "${NODE_PATH:-}" ] && [ -d "$NODE_PATH/openai" ]; then
  if ! (cd "$(dirname "$NODE_PATH")" && timeout 300 npm install --silent --no-audit --no-fund -E zod@4.6.7 >/dev/null 2>&1); then
    echo "npm install zod failed; the structured-outputs SDK test will be skipped"
  fi
else
  echo "the openai npm package is not installed; the structured-outputs SDK test will be skipped"
fi
