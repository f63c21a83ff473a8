#!/usr/bin/env bash
# Install the Debian packages a job needs, if any is missing (needs root and apt-get).
#
#   hack/host-packages.sh ci     everything `make test` uses (what .ci/run installs)
#   hack/host-packages.sh node   what the real node needs (`make demo`, `make cluster-up NODE=real`)
#
# With --check, install nothing: list what is missing and exit 1 if anything is.
set -euo pipefail

# The real node: containerd + runc run the Pods; the CNI plugins give them a network; iptables and
# conntrack serve kube-proxy; iproute2 and util-linux make the namespaces; podman, debootstrap and
# gcc build and save the images loaded into the node.
NODE=(containerd runc containernetworking-plugins iptables conntrack iproute2 util-linux podman debootstrap gcc libc6-dev)
# Everything else the tests use: git, make, a C compiler (opm's cgo); PostgreSQL 15 and pgBackRest
# (the operator's scripts run against a real server, and archive to a real object store).
CI=(git make ca-certificates curl postgresql-15 postgresql-client-15 pgbackrest "${NODE[@]}")

check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
case "${1:-}" in
  ci) wanted=("${CI[@]}") ;;
  node) wanted=("${NODE[@]}") ;;
  *) echo "usage: $0 [--check] ci|node" >&2; exit 2 ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$check" = 1 ]; then echo "${missing[*]}"; exit 1; fi
[ "$(id -u)" = 0 ] || { echo "missing Debian packages: ${missing[*]} (installing them needs root)" >&2; exit 1; }
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}"
