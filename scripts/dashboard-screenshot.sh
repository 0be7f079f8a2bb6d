#!/bin/sh
# Runs the dashboard's headless-browser test: installs Chromium from
# Debian's packages when no Chromium is on PATH (needs root or sudo), builds
# strew, runs tests/tests/process/everyday.rs and leaves the screenshot in
# target/dashboard.png (or $STREW_SCREENSHOT).
set -eu
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
fi
cargo build -p strew-node --bin strew
target_dir="${CARGO_TARGET_DIR:-target}"
STREW_BIN="$target_dir/debug/strew" cargo nextest run -p strew-tests -E 'test(/^everyday::/)' --no-capture
echo "screenshot: ${STREW_SCREENSHOT:-target/dashboard.png}"
