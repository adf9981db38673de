#!/usr/bin/env bash
# Runs every check and test dbprov has: installs the test tools on first use (cached after),
# then formatting, clippy, and all unit and integration tests against real components.
#
# Usage: scripts/test.sh [extra cargo test args, e.g. --test integration kube_smoke::]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS
scripts/install-tools.sh
echo "== tools ready after $((SECONDS - start))s"

for tool in cargo rustc; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: install Rust (rustup) first" >&2; exit 1; }
done

step() { echo "== $*"; }

# A cold debug build of the workspace and its tests fills about 2.7 GiB of target/, 1.6 GiB
# more with incremental caches (docs/development.md#disk). Say so before the build runs out of
# space half-way with a less helpful "No space left on device".
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_gib=$(df -Pk "$target_dir" | awk 'NR == 2 { printf "%d", $4 / 1048576 }')
echo "== ${free_gib} GiB free for $target_dir"
if (( free_gib < 6 )); then
  echo "warning: a cold build needs about 5 GiB in $target_dir and only ${free_gib} GiB are free;" \
    "free some (cargo clean) or point CARGO_TARGET_DIR at a larger disk" >&2
fi

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build --bins (integration tests run the real dbprov-hub and dbprov-agent binaries)"
cargo build --workspace --bins --locked

step "cargo test (unit + integration, real components)"
# Not --all-targets: that would also run the benchmarks, unoptimised (clippy checks them).
cargo test --workspace --lib --bins --tests --locked --no-fail-fast "$@"

echo "== $target_dir holds $(du -sh "$target_dir" | cut -f1)"
echo "== all checks passed in $((SECONDS - start))s"
