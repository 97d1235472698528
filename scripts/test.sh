#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, conformance against the
# memory backend and against real redis-server processes, the demo, the test kit).
# Installs redis-server first when it is missing (Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    echo "==> installing redis-server"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi
echo "==> $(redis-server --version)"

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p rivulet --no-default-features --all-targets -- -D warnings

echo "==> cargo test"
cargo test --workspace --no-fail-fast
