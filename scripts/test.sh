#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, conformance against the
# memory backend and against real redis-server processes, the demo, the test kit).
# Installs redis-server and redis-sentinel first when they are missing (Debian/Ubuntu;
# Debian's redis-server is built with TLS, which the TLS tests need), and chromium with
# chromium-driver for the dashboard's browser test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v redis-sentinel >/dev/null 2>&1 || missing="$missing redis-sentinel"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/bin/chromedriver ] || missing="$missing chromium-driver"
if [ -n "$missing" ]; then
    echo "==> installing$missing"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    # The packages start services on the default ports where an init system runs; the
    # tests never use those ports.
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi
echo "==> $(redis-server --version)"
echo "==> $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium missing')"

# A clean clone is built once: incremental state would only double the target's size.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
# `dev-tools` puts the demo and the benchmark into the rivulet command (and runs their
# tests); the production binary is built without it, so that is linted too.
cargo clippy --workspace --all-targets --features rivulet-cli/dev-tools,rivulet/otel -- -D warnings
cargo clippy -p rivulet-cli --all-targets -- -D warnings
cargo clippy -p rivulet --no-default-features --all-targets -- -D warnings

echo "==> cargo test"
# One build for every test: the demo and bench (`dev-tools`) and trace propagation
# (`otel`; `prometheus` comes on through the CLI) are in it.
cargo test --workspace --no-fail-fast --features rivulet-cli/dev-tools,rivulet/otel
