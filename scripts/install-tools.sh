#!/usr/bin/env bash
# Installs every external tool dbprov's tests and local run need, at the versions pinned in
# scripts/versions.env. Idempotent: a tool already in $HOME/.cache/dbprov/<tool>-<version>/ is
# reused, so a second run takes seconds. Go tools are built from source through the Go module
# proxy (no release-page downloads exist on these machines).
#
# Usage: scripts/install-tools.sh [--only NAME[,NAME...]] [--skip-apt]
#   NAMES: apt kubernetes etcd grpcurl helm promtool thirdparty-crds minio fake-gcs-server azurite
#          migration-tools victoria-logs opa dpo
#
# After a run, $HOME/.cache/dbprov/bin holds a symlink per tool; the test harness and
# scripts/dev-up.sh look there first (override with DBPROV_TOOLS_DIR).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${DBPROV_CACHE_DIR:-$HOME/.cache/dbprov}"
bin="${DBPROV_TOOLS_DIR:-$cache/bin}"
mkdir -p "$cache" "$bin"

only=""
skip_apt=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --only) only=",$2,"; shift 2 ;;
    --skip-apt) skip_apt=1; shift ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "install-tools: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

wanted() { [[ -z "$only" || "$only" == *",$1,"* ]]; }

summary=()
note() { summary+=("$(printf '%-16s %-40s %s' "$1" "$2" "$3")"); }

log() { printf '[install-tools] %s\n' "$*" >&2; }

link() { # link NAME TARGET
  ln -sfn "$2" "$bin/$1"
}

logged() { # logged LOGFILE CMD...: CMD's output into LOGFILE, shown only if CMD fails
  "${@:2}" >"$1" 2>&1 || { cat "$1" >&2; return 1; }
}

timed() { # timed LABEL CMD...
  local start=$SECONDS
  "${@:2}"
  log "$1 took $((SECONDS - start))s"
}

# ---------------------------------------------------------------------------------------------
# Debian packages
install_apt() {
  local missing=()
  for p in $DEBIAN_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    note apt "$DEBIAN_PACKAGES" cached
    return
  fi
  if [[ $skip_apt -eq 1 ]]; then
    log "missing Debian packages (skipped by --skip-apt): ${missing[*]}"
    note apt "${missing[*]}" "MISSING (--skip-apt)"
    return
  fi
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  log "apt-get install ${missing[*]}"
  # Package scripts must not start system-wide database services: tests start their own.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    created_policy=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [[ $created_policy -eq 0 ]] || $sudo rm -f "$policy"
  note apt "${missing[*]}" installed
}

# ---------------------------------------------------------------------------------------------
# Go builds. Each tool gets its own wrapper module under $cache/<tool>-<version>/src so the
# exact dependency graph is recorded, and its binaries under $cache/<tool>-<version>/bin.
#
# Go's module and build caches for these builds live under $cache/go, not in the user's own
# GOMODCACHE/GOCACHE, and are removed at the end of a run that built something: the binaries
# are what is kept, and a cold run's caches take about 10 GiB (4.6 GiB of modules, 5.8 GiB of
# build cache). DBPROV_KEEP_GO_CACHE=1 keeps them for faster rebuilds after a version bump.
go_scratch="$cache/go"
go_env() {
  export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
  export GOMODCACHE="$go_scratch/mod" GOCACHE="$go_scratch/build"
}

# go_install TOOL VERSION BINARY PACKAGE@VERSION [EXTRA_LDFLAGS]
# EXTRA_LDFLAGS stamp the version into tools that print it (`helm version`, `grpcurl -version`),
# which release builds set the same way.
go_install() {
  local tool=$1 version=$2 binary=$3 pkg=$4 extra_ld=${5:-}
  local dir="$cache/$tool-$version"
  if [[ -x "$dir/bin/$binary" ]]; then
    link "$binary" "$dir/bin/$binary"
    note "$tool" "$version" cached
    return
  fi
  log "building $tool $version from the Go module proxy"
  go_env
  rm -rf "$dir/bin.tmp"
  mkdir -p "$dir/bin.tmp"
  timed "$tool" env GOBIN="$dir/bin.tmp" go install -trimpath -ldflags "-s -w $extra_ld" "$pkg"
  rm -rf "$dir/bin" && mv "$dir/bin.tmp" "$dir/bin"
  link "$binary" "$dir/bin/$binary"
  note "$tool" "$version" built
}

install_kubernetes() {
  local v=$KUBERNETES_VERSION dir="$cache/kubernetes-$KUBERNETES_VERSION"
  if [[ -x "$dir/bin/kube-apiserver" && -x "$dir/bin/kubectl" ]]; then
    link kube-apiserver "$dir/bin/kube-apiserver"
    link kubectl "$dir/bin/kubectl"
    note kubernetes "v$v" cached
    return
  fi
  log "building kube-apiserver and kubectl v$v (slow: ~10-20 min on 2 cores)"
  go_env
  local src="$dir/src"
  rm -rf "$src" && mkdir -p "$src"
  local minor=${v#*.}; minor=${minor%%.*}
  local staging="0.${v#*.}"
  (
    cd "$src"
    go mod init dbprov.local/kubernetes-build >/dev/null 2>&1
    go mod edit -go=1.24.0
    # k8s.io/kubernetes replaces each staging module with a path inside its own repo; a
    # consumer must replace them with the published v0.<minor>.<patch> modules instead.
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@v$v" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
    local staged
    staged=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$gomod")
    [[ -n "$staged" ]] || { log "no staging replaces found in $gomod"; exit 1; }
    for m in $staged; do go mod edit -replace "$m=$m@v$staging"; done
    go mod edit -require "k8s.io/kubernetes@v$v"
    cat > tools.go <<'GO'
//go:build tools

// Package tools pins the Kubernetes commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    go mod tidy >/dev/null
    local ld="-s -w"
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      ld+=" -X $pkg.gitVersion=v$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    mkdir -p ../bin.tmp
    timed kube-apiserver go build -trimpath -ldflags "$ld" -o ../bin.tmp/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
    timed kubectl go build -trimpath -ldflags "$ld" -o ../bin.tmp/kubectl k8s.io/kubernetes/cmd/kubectl
  )
  rm -rf "$dir/bin" && mv "$dir/bin.tmp" "$dir/bin"
  link kube-apiserver "$dir/bin/kube-apiserver"
  link kubectl "$dir/bin/kubectl"
  note kubernetes "v$v" built
}

install_etcd() {
  local v=$ETCD_VERSION dir="$cache/etcd-$ETCD_VERSION"
  if [[ -x "$dir/bin/etcd" ]]; then
    link etcd "$dir/bin/etcd"
    note etcd "v$v" cached
    return
  fi
  log "building etcd v$v"
  go_env
  local src="$dir/src"
  rm -rf "$src" && mkdir -p "$src"
  (
    cd "$src"
    go mod init dbprov.local/etcd-build >/dev/null 2>&1
    cat > main.go <<'GO'
// Command etcd is the etcd server, built from its published module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go mod edit -require "go.etcd.io/etcd/server/v3@v$v"
    go mod tidy >/dev/null
    mkdir -p ../bin.tmp
    timed etcd go build -trimpath -ldflags "-s -w" -o ../bin.tmp/etcd .
  )
  rm -rf "$dir/bin" && mv "$dir/bin.tmp" "$dir/bin"
  link etcd "$dir/bin/etcd"
  note etcd "v$v" built
}

# CRD manifests of the Prometheus Operator and cert-manager, from their Go modules' source
# (the proxy serves whole repositories), into $cache/thirdparty-crds-.../ linked as
# $bin/thirdparty-crds.
install_thirdparty_crds() {
  local dir="$cache/thirdparty-crds-po$PROMETHEUS_OPERATOR_VERSION-cm$CERT_MANAGER_VERSION"
  if [[ -f "$dir/.complete" ]]; then
    link thirdparty-crds "$dir"
    note thirdparty-crds "po $PROMETHEUS_OPERATOR_VERSION, cm $CERT_MANAGER_VERSION" cached
    return
  fi
  log "fetching Prometheus Operator and cert-manager CRDs from the Go module proxy"
  go_env
  local po cm
  po=$(cd /tmp && go mod download -json "github.com/prometheus-operator/prometheus-operator@v$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  cm=$(cd /tmp && go mod download -json "github.com/cert-manager/cert-manager@v$CERT_MANAGER_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  [[ -d "$po" && -d "$cm" ]] || { log "module download failed (po=$po cm=$cm)"; exit 1; }
  rm -rf "$dir" && mkdir -p "$dir"
  for f in servicemonitors prometheusrules; do
    cp "$po/example/prometheus-operator-crd/monitoring.coreos.com_$f.yaml" "$dir/"
  done
  for f in certificates issuers clusterissuers; do
    cp "$cm/deploy/crds/cert-manager.io_$f.yaml" "$dir/"
  done
  chmod u+w "$dir"/*.yaml
  touch "$dir/.complete"
  link thirdparty-crds "$dir"
  note thirdparty-crds "po $PROMETHEUS_OPERATOR_VERSION, cm $CERT_MANAGER_VERSION" fetched
}

install_azurite() {
  local v=$AZURITE_VERSION dir="$cache/azurite-$AZURITE_VERSION"
  if [[ -x "$dir/node_modules/.bin/azurite-blob" ]]; then
    link azurite-blob "$dir/node_modules/.bin/azurite-blob"
    note azurite "$v" cached
    return
  fi
  log "installing azurite $v from npm"
  mkdir -p "$dir"
  timed azurite npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "azurite@$v" >/dev/null
  link azurite-blob "$dir/node_modules/.bin/azurite-blob"
  note azurite "$v" installed
}

# Flyway and Liquibase (the real engines, for the DatabaseMigration interop tests) and the JDBC
# drivers, from Maven Central; versions are pinned in tests/jvm/pom.xml. Java 17 and Maven come
# from Debian when missing. Maven's repository is $cache/m2 (not ~/.m2); the jars are copied to
# $cache/migration-tools-<versions>-<hash>/lib, where tests/jvm/FlywayCli.java is compiled. The
# hash covers the pom, the runner and this function, so changing any of them installs side by
# side. Two wrappers are linked into $bin: `flyway` (FlywayCli: Flyway's command-line flags,
# commands migrate info validate repair baseline) and `liquibase` (Liquibase's own
# LiquibaseCommandLine). flyway-commandline itself is not installable from Maven Central (a
# dependency lives only on repo.gradle.org).
install_migration_tools() {
  local jvm="$here/../tests/jvm"
  local fv lv sum
  fv=$(sed -n 's:.*<flyway.version>\(.*\)</flyway.version>.*:\1:p' "$jvm/pom.xml")
  lv=$(sed -n 's:.*<liquibase.version>\(.*\)</liquibase.version>.*:\1:p' "$jvm/pom.xml")
  # The function itself is hashed too: it writes the wrappers.
  sum=$( (cat "$jvm/pom.xml" "$jvm/FlywayCli.java"; declare -f install_migration_tools) \
    | sha256sum | cut -c1-12)
  local dir="$cache/migration-tools-flyway$fv-liquibase$lv-$sum"
  local label="flyway $fv, liquibase $lv"
  if [[ -f "$dir/.complete" ]]; then
    link flyway "$dir/bin/flyway"
    link liquibase "$dir/bin/liquibase"
    note migration-tools "$label" cached
    return
  fi
  local jdk="" missing=()
  for j in /usr/lib/jvm/java-17-openjdk-*/bin; do
    [[ -x "$j/java" && -x "$j/javac" ]] && { jdk=$j; break; }
  done
  [[ -n "$jdk" ]] || missing+=(openjdk-17-jdk-headless)
  command -v mvn >/dev/null || missing+=(maven)
  if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $skip_apt -eq 1 ]]; then
      log "migration-tools needs Debian packages (skipped by --skip-apt): ${missing[*]}"
      note migration-tools "${missing[*]}" "MISSING (--skip-apt)"
      return
    fi
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    log "apt-get install ${missing[*]}"
    $sudo apt-get update -qq
    timed "apt ${missing[*]}" $sudo env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    for j in /usr/lib/jvm/java-17-openjdk-*/bin; do
      [[ -x "$j/java" && -x "$j/javac" ]] && { jdk=$j; break; }
    done
    [[ -n "$jdk" ]] || { log "no Java 17 JDK under /usr/lib/jvm after installing"; exit 1; }
  fi
  log "resolving Flyway $fv and Liquibase $lv from Maven Central"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/bin" "$dir.tmp/classes"
  # The pom is copied so that Maven writes nothing into the checkout.
  cp "$jvm/pom.xml" "$dir.tmp/pom.xml"
  # Maven prints errors on stdout amid its download progress and terminal escapes: its output
  # goes to a log that is shown only when it fails.
  timed "maven (migration-tools)" logged "$dir.tmp/maven.log" env JAVA_HOME="${jdk%/bin}" \
    mvn -B -Dstyle.color=never -f "$dir.tmp/pom.xml" -Dmaven.repo.local="$cache/m2" \
    dependency:copy-dependencies -DoutputDirectory="$dir.tmp/lib"
  timed "javac FlywayCli" "$jdk/javac" -nowarn -d "$dir.tmp/classes" -cp "$dir.tmp/lib/*" \
    "$jvm/FlywayCli.java"
  # Paths are those of the final directory; the wrappers are only linked after the move.
  cat > "$dir.tmp/bin/flyway" <<SH
#!/bin/sh
# Flyway $fv (flyway-core API) with the command line's flags: see tests/jvm/FlywayCli.java.
exec "$jdk/java" \${JAVA_OPTS:-} -cp "$dir/classes:$dir/lib/*" FlywayCli "\$@"
SH
  cat > "$dir.tmp/bin/liquibase" <<SH
#!/bin/sh
# Liquibase $lv's own command line. Usage reports are off unless asked for.
export LIQUIBASE_ANALYTICS_ENABLED="\${LIQUIBASE_ANALYTICS_ENABLED:-false}"
exec "$jdk/java" \${JAVA_OPTS:-} -cp "$dir/lib/*" liquibase.integration.commandline.LiquibaseCommandLine "\$@"
SH
  chmod +x "$dir.tmp/bin/flyway" "$dir.tmp/bin/liquibase"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  touch "$dir/.complete"
  link flyway "$dir/bin/flyway"
  link liquibase "$dir/bin/liquibase"
  note migration-tools "$label" installed
}

# db-provision-operator v0.14, the Go operator dbprov succeeds: built from its source beside the
# repository (../shared/reference/dpo-v0.14-src, or DBPROV_DPO_SRC) with that source's own
# go.mod/go.sum, dependencies through the module proxy. The switch-over test runs it; it is
# keyed by a hash of its source so an edited source is rebuilt.
install_dpo() {
  local src="${DBPROV_DPO_SRC:-$here/../../shared/reference/dpo-v0.14-src}"
  if [[ ! -f "$src/go.mod" ]]; then
    log "db-provision-operator source not found at $src (set DBPROV_DPO_SRC): not built"
    note dpo-manager "v$DPO_VERSION" "source missing"
    return
  fi
  src="$(cd "$src" && pwd)"
  local sum
  sum=$(cd "$src" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
  local dir="$cache/dpo-$DPO_VERSION-$sum"
  if [[ -x "$dir/bin/dpo-manager" ]]; then
    link dpo-manager "$dir/bin/dpo-manager"
    note dpo-manager "v$DPO_VERSION" cached
    return
  fi
  log "building db-provision-operator v$DPO_VERSION from $src"
  go_env
  rm -rf "$dir/bin.tmp"
  mkdir -p "$dir/bin.tmp"
  # -mod=readonly: the build uses exactly the versions its go.sum records.
  (cd "$src" && timed dpo-manager go build -mod=readonly -trimpath -ldflags "-s -w" \
    -o "$dir/bin.tmp/dpo-manager" ./cmd)
  rm -rf "$dir/bin" && mv "$dir/bin.tmp" "$dir/bin"
  link dpo-manager "$dir/bin/dpo-manager"
  note dpo-manager "v$DPO_VERSION" built
}

wanted apt && install_apt
wanted etcd && install_etcd
wanted grpcurl && go_install grpcurl "v$GRPCURL_VERSION" grpcurl \
  "github.com/fullstorydev/grpcurl/cmd/grpcurl@v$GRPCURL_VERSION" "-X main.version=v$GRPCURL_VERSION"
wanted helm && go_install helm "v$HELM_VERSION" helm "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" \
  "-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
wanted promtool && go_install promtool "v$PROMETHEUS_VERSION" promtool \
  "github.com/prometheus/prometheus/cmd/promtool@v$PROMETHEUS_VERSION"
wanted thirdparty-crds && install_thirdparty_crds
wanted fake-gcs-server && go_install fake-gcs-server "v$FAKE_GCS_SERVER_VERSION" fake-gcs-server "github.com/fsouza/fake-gcs-server@v$FAKE_GCS_SERVER_VERSION"
wanted victoria-logs && go_install victoria-logs "v$VICTORIALOGS_VERSION" victoria-logs \
  "github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs@v$VICTORIALOGS_VERSION"
wanted opa && go_install opa "v$OPA_VERSION" opa "github.com/open-policy-agent/opa@v$OPA_VERSION" \
  "-X github.com/open-policy-agent/opa/v1/version.Version=$OPA_VERSION"
wanted azurite && install_azurite
wanted migration-tools && install_migration_tools
wanted minio && go_install minio "$MINIO_VERSION" minio "github.com/minio/minio@$MINIO_VERSION"
wanted dpo && install_dpo
wanted kubernetes && install_kubernetes

if [[ -d "$go_scratch" && "${DBPROV_KEEP_GO_CACHE:-0}" != 1 ]]; then
  log "removing the Go caches of this run ($(du -sh "$go_scratch" | cut -f1)); DBPROV_KEEP_GO_CACHE=1 keeps them"
  # The module cache is read-only by design.
  chmod -R u+w "$go_scratch" && rm -rf "$go_scratch"
fi

echo "dbprov tools (cache: $cache, links: $bin):"
for line in "${summary[@]}"; do echo "  $line"; done
