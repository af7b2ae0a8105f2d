# Debian's chromium for the review page's end-to-end test (train/data/review TestReviewPageInBrowser, which
# drives it headless over the DevTools protocol with chromedp). LORAKIT_CHROMIUM makes the test run (and fail
# when the browser is broken) instead of skipping. Sourced by .ci/run.
if ! command -v chromium >/dev/null 2>&1; then
  if ! (timeout 900 apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 ||
        { timeout 300 apt-get update >/dev/null 2>&1 && timeout 900 apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }); then
    echo "apt-get install chromium failed; the review page browser test will be skipped"
  fi
fi
if command -v chromium >/dev/null 2>&1; then
  LORAKIT_CHROMIUM="$(command -v chromium)"
  export LORAKIT_CHROMIUM
fi
