#!/usr/bin/env bash
# Build the pinned Kubernetes toolchain from the Go module proxy and cache it outside the repo.
# (One exception: checkov, the manifest linter, is a Python tool installed from PyPI into a venv.)
#
# Why a script and not `go install` everywhere: k8s.io/kubernetes and etcd carry `replace`
# directives, which `go install mod@ver` refuses, so they are built in a scratch module that
# re-declares the replaces against the published staging modules. Every binary lands in
#   $TOOLS_DIR/<name>-<version>/<name>
# so changing a version in hack/versions.env builds into a new folder and a second run with
# the same versions does nothing.
#
# Usage: hack/build-tools.sh [tool ...]   (default: every tool; `--print-dir` prints TOOLS_DIR)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

TOOLS_DIR=${SAMPLEDB_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sampledb-operator/tools}
WORK_DIR=${SAMPLEDB_TOOLS_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/sampledb-operator/build}
export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

ALL_TOOLS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kubelet kube-proxy coredns helm opm olm catalog bundle-validate checkov versitygw)
# Not in the default set: the module proxy reachable here serves operator-sdk v1.42.0's .info and
# .zip but refuses its .mod (403), and refuses older releases outright, so the Go client cannot
# build it. `hack/build-tools.sh operator-sdk` still tries (and says why it fails).
UNAVAILABLE_TOOLS=(operator-sdk)

log() { printf '[tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

version_of() {
  case "$1" in
    etcd) echo "$ETCD_VERSION" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet|kube-proxy) echo "$KUBERNETES_VERSION" ;;
    coredns) echo "$COREDNS_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    operator-sdk) echo "$OPERATOR_SDK_VERSION" ;;
    opm) echo "$OPM_VERSION" ;;
    olm|catalog) echo "$OLM_VERSION" ;;
    bundle-validate) echo "$OPERATOR_FRAMEWORK_API_VERSION" ;;
    checkov) echo "$CHECKOV_VERSION" ;;
    versitygw) echo "$VERSITYGW_VERSION" ;;
    *) die "unknown tool '$1' (known: ${ALL_TOOLS[*]})" ;;
  esac
}

target_of() { echo "$TOOLS_DIR/$1-$(version_of "$1")/$1"; }

# A fresh scratch module in $WORK_DIR/<name>; prints its path.
scratch_module() {
  local dir="$WORK_DIR/$1"
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && go mod init "local/$1" >/dev/null 2>&1)
  echo "$dir"
}

# Path of a module's go.mod in the module cache (downloads it if needed).
gomod_of() {
  go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])'
}

build_kubernetes() {  # $1 = binary name (cmd/<name>)
  local name=$1 ver=$KUBERNETES_VERSION dir gomod minor
  minor=${ver#v1.}; minor=${minor%%.*}
  dir="$WORK_DIR/kubernetes-$ver"
  if [ ! -f "$dir/.ready" ]; then
    dir=$(scratch_module "kubernetes-$ver")
    gomod=$(gomod_of "k8s.io/kubernetes@$ver")
    # Replace every staging module with its published v0.<minor>.<patch> twin, as listed in
    # the release's own go.mod (the list changes between releases), and keep its godebug lines.
    python3 - "$gomod" "$dir/go.mod" "v0.${ver#v1.}" <<'PY'
import re, sys
src, dst, staging_version = sys.argv[1:]
text = open(src).read()
replaces = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/src/\S+", text, re.M)
godebug = re.search(r"^godebug \((.*?)^\)", text, re.M | re.S)
with open(dst, "a") as out:
    out.write("\n" + "\n".join(f"replace {m} => {m} {staging_version}" for m in replaces) + "\n")
    if godebug:
        out.write("\ngodebug (" + godebug.group(1) + ")\n")
PY
    (cd "$dir" && go get "k8s.io/kubernetes@$ver" >/dev/null 2>&1 || go get "k8s.io/kubernetes@$ver")
    touch "$dir/.ready"
  fi
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$ver -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  (cd "$dir" && CGO_ENABLED=0 go build -mod=mod -ldflags "-s -w$ldflags" -o "$2" "k8s.io/kubernetes/cmd/$name")
}

# Build package $3 of module $1@$2 into $4 in a scratch module, with extra `go build` flags after.
# Used instead of `go install pkg@ver` for every module: that form refuses modules with replace
# directives, and its lookup of the package path as a module answers 403 on this proxy.
build_in_scratch() {
  local module=$1 version=$2 package=$3 out=$4; shift 4
  local dir; dir=$(scratch_module "$(basename "$out")")
  (cd "$dir" && go get "$module@$version" >/dev/null && go build -mod=mod "$@" -o "$out" "$package")
}

build_etcd() {
  CGO_ENABLED=0 build_in_scratch go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "$1"
}

# CoreDNS with only the plugins the real node's DNS uses. The upstream main package compiles in every
# plugin (cloud DNS providers included: hundreds of modules to download and build); CoreDNS's own
# documented way to choose plugins is a main package that imports coremain and the wanted plugins
# and sets dnsserver.Directives (their order is the order a query passes them). This one serves
# cluster names only: there is deliberately no `forward` plugin, so nothing is ever asked upstream.
build_coredns() {
  local dir; dir=$(scratch_module coredns)
  cat >"$dir/main.go" <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes"}
}

func main() { coremain.Run() }
GO
  (cd "$dir" && go get "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null && go mod tidy >/dev/null \
    && CGO_ENABLED=0 go build -mod=mod -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" -o "$1" .)
}

build_helm() {
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local pkg=helm.sh/helm/v3/internal/version pkg2=helm.sh/helm/v3/pkg/chartutil
  GOBIN=$(dirname "$1") CGO_ENABLED=0 go install -ldflags "-s -w -X $pkg.version=$HELM_VERSION \
    -X $pkg2.k8sVersionMajor=1 -X $pkg2.k8sVersionMinor=$minor" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

build_operator_sdk() {
  local mod=github.com/operator-framework/operator-sdk pkg=github.com/operator-framework/operator-sdk/internal/version
  # The checksum database reachable here has no entry for any operator-sdk release (404), so this
  # one module is exempted from it: its hash is taken on first download (trust on first use)
  # instead of checked against the public log. Every dependency is still verified.
  GONOSUMDB=$mod CGO_ENABLED=0 build_in_scratch "$mod" "$OPERATOR_SDK_VERSION" "$mod/cmd/operator-sdk" "$1" \
    -tags containers_image_openpgp \
    -ldflags "-s -w -X $pkg.Version=$OPERATOR_SDK_VERSION -X $pkg.KubernetesVersion=$KUBERNETES_VERSION"
}

build_opm() {  # upstream builds opm with cgo (sqlite)
  local mod=github.com/operator-framework/operator-registry pkg=github.com/operator-framework/operator-registry/cmd/opm/version
  CGO_ENABLED=1 build_in_scratch "$mod" "$OPM_VERSION" "$mod/cmd/opm" "$1" \
    -tags json1,containers_image_openpgp -ldflags "-s -w -X $pkg.gitCommit=$OPM_VERSION -X $pkg.opmVersion=$OPM_VERSION"
}

build_olm() {  # olm and catalog share a module
  local mod=github.com/operator-framework/operator-lifecycle-manager
  CGO_ENABLED=0 build_in_scratch "$mod" "$OLM_VERSION" "$mod/cmd/$2" "$1" -ldflags "-s -w"
}

# operator-sdk's `bundle validate` checks without operator-sdk (see hack/bundle-validate/main.go):
# our small main package built against the pinned github.com/operator-framework/api.
build_bundle_validate() {
  local dir; dir=$(scratch_module bundle-validate)
  cp "$here/bundle-validate/main.go" "$dir/"
  (cd "$dir" && go get "github.com/operator-framework/api@$OPERATOR_FRAMEWORK_API_VERSION" >/dev/null && go mod tidy >/dev/null \
    && CGO_ENABLED=0 go build -mod=mod -ldflags "-s -w" -o "$1" .)
}

# checkov (hack/manifest_lint.py) from PyPI, in its own venv next to the link $1: never in the
# project's venv, whose pins (operator/constraints.txt) its many dependencies would fight.
build_checkov() {
  local venv; venv="$(dirname "$1")/venv"
  local python=${CHECKOV_PYTHON:-python3.11}
  command -v "$python" >/dev/null || python=python3
  rm -rf "$venv"
  "$python" -m venv "$venv" \
    && "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" \
    && "$venv/bin/checkov" --version >/dev/null \
    && ln -sfn venv/bin/checkov "$1"
}

build_one() {
  local name=$1 target; target=$(target_of "$name")
  if [ -x "$target" ]; then log "$name $(version_of "$name"): cached"; return 0; fi
  mkdir -p "$(dirname "$target")"
  if [ "$name" != checkov ]; then
    command -v go >/dev/null || die "go is not on PATH; install Go (>= 1.24) first"
  fi
  local start=$SECONDS
  log "$name $(version_of "$name"): building (first build on a fresh machine takes minutes)..."
  case "$name" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet|kube-proxy) build_kubernetes "$name" "$target" ;;
    coredns) build_coredns "$target" ;;
    etcd) build_etcd "$target" ;;
    kwok) GOBIN=$(dirname "$target") CGO_ENABLED=0 go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" ;;
    helm) build_helm "$target" ;;
    operator-sdk) build_operator_sdk "$target" ;;
    opm) build_opm "$target" ;;
    olm|catalog) build_olm "$target" "$name" ;;
    bundle-validate) build_bundle_validate "$target" ;;
    checkov) build_checkov "$target" ;;
    versitygw) GOBIN=$(dirname "$target") CGO_ENABLED=0 go install -ldflags "-s -w" "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" ;;
  esac || { rm -f "$target"; die "$name failed to build (see the go or pip output above)"; }
  [ -x "$target" ] || die "$name: build finished but $target is missing"
  log "$name: built in $((SECONDS - start)) s -> $target"
}

if [ "${1:-}" = "--print-dir" ]; then echo "$TOOLS_DIR"; exit 0; fi
tools=("$@")
if [ ${#tools[@]} -eq 0 ]; then
  tools=("${ALL_TOOLS[@]}")
  log "not built by default: ${UNAVAILABLE_TOOLS[*]} (the module proxy here refuses its go.mod; see the script)"
fi
total_start=$SECONDS
for t in "${tools[@]}"; do build_one "$t"; done
log "all requested tools ready in $((SECONDS - total_start)) s (cache: $TOOLS_DIR)"
