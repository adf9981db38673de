#!/usr/bin/env bash
# Runs every check and test dbprov has: installs the test tools on first use (cached after),
# then formatting, clippy, and all unit and integration tests against real components.
#
# Usage: scripts/test.sh [extra cargo test args, e.g. -p dbprov-tests --test kube]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS
scripts/install-tools.sh
echo "== tools ready after $((SECONDS - start))s"

for tool in cargo rustc; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: install Rust (rustup) first" >&2; exit 1; }
done

step() { echo "== $*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build --bins (integration tests run the real dbprov-hub and dbprov-agent binaries)"
cargo build --workspace --bins --locked

step "cargo test (unit + integration, real components)"
# Not --all-targets: that would also run the benchmarks, unoptimised (clippy checks them).
cargo test --workspace --lib --bins --tests --locked --no-fail-fast "$@"

echo "== all checks passed in $((SECONDS - start))s"
