#!/usr/bin/env bash
# Runs dbprov locally: installs the tools on first use, then starts a Kubernetes control plane
# (etcd + kube-apiserver), PostgreSQL, MariaDB, MinIO, fake-gcs-server and Azurite on
# 127.0.0.1 and prints how to reach each. Ctrl-C stops everything and removes its data.
#
# Usage: scripts/dev.sh [--env-file FILE] [--check]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-tools.sh
cargo build --locked -p dbprov-tests --bin dbprov-devenv
exec target/debug/dbprov-devenv "$@"
