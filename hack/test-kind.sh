#!/usr/bin/env bash
# `make test-kind`: the project's cluster tests on a kind cluster, for machines with Docker (or
# podman through KIND_EXPERIMENTAL_PROVIDER=podman). Our own CI machines have neither a Docker
# engine nor kind, so this script is not run there: it was checked with bash -n and shellcheck.
#
# Steps:
#   1. check that kind, the container engine, kubectl, helm and operator-sdk are there;
#   2. create the kind cluster $KIND_CLUSTER (default sampledb-test) unless it exists, and a local
#      registry container next to it (the kind docs' recipe): `operator-sdk run bundle` pulls the
#      bundle image from a registry, on this machine and inside the cluster, not from kind's nodes;
#   3. `make docker-build` and `make bundle-build`, `kind load docker-image` both, and push the
#      bundle image to the local registry (the e2e tests load their own images: KIND_CLUSTER);
#   4. Helm: `make deploy IMG=...` into sampledb-system (it installs the CRDs and the conversion
#      webhook the tests expect on an existing cluster), then the operator Deployment is scaled to
#      0 so that the integration tests' own operator process is the only one acting;
#   5. the integration tests with KUBECONFIG set (tests/conftest.py then uses this cluster), minus
#      tests/integration/test_cluster.py, which tests the local control plane itself;
#   6. `make undeploy` (the e2e Helm tests install their own release), then the e2e tests (Helm,
#      OLM, webhook availability, leader handover, namespace mode: the same as on the real node), minus
#      tests/e2e/test_image.py (the image with podman on this host, and an operator on the local
#      control plane only);
#   7. OLM: `operator-sdk olm install` unless OLM runs, `operator-sdk run bundle` in a fresh
#      namespace, wait for the CSV to be Succeeded;
#   8. `operator-sdk scorecard bundle` in that namespace;
#   9. delete the cluster (and the registry this script started) unless KEEP_CLUSTER=1.
#
# Settings (environment): KIND_CLUSTER, KEEP_CLUSTER=1, KIND_EXPERIMENTAL_PROVIDER (docker|podman),
# KIND_NODE_IMAGE (kind's --image), KIND_REGISTRY_NAME (kind-registry), KIND_REGISTRY_PORT (5001),
# OPERATOR_SDK (operator-sdk), PYTEST_ARGS, and from the Makefile: VERSION, IMG, BUNDLE_IMG, PYTHON.
# BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm (any Debian-like image with python3 >= 3.11
# and python3-venv) builds the operator image without `make base-images` (debootstrap, as root).
# The tests call the pinned tools (hack/build-tools.sh builds kubectl, helm, opm, olm and catalog
# with Go the first time); this script's own steps use kubectl and helm from PATH.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cd "$repo"

KIND_CLUSTER=${KIND_CLUSTER:-sampledb-test}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
PROVIDER=${KIND_EXPERIMENTAL_PROVIDER:-docker}
REGISTRY_NAME=${KIND_REGISTRY_NAME:-kind-registry}
REGISTRY_PORT=${KIND_REGISTRY_PORT:-5001}
OPERATOR_SDK=${OPERATOR_SDK:-operator-sdk}
VERSION=${VERSION:-0.1.0}
IMG=${IMG:-localhost/sampledb-operator:$VERSION}
BUNDLE_IMG=${BUNDLE_IMG:-localhost/sampledb-operator-bundle:v$VERSION}
PYTHON=${PYTHON:-.venv/bin/python}
# Arrays that may be empty are expanded as ${a[@]+"${a[@]}"}: bash < 4.4 (macOS) fails on "${a[@]}" under set -u.
read -r -a pytest_args <<<"${PYTEST_ARGS:-}"
# The bundle image as the cluster and operator-sdk pull it: pushed to the local registry.
REGISTRY_BUNDLE_IMG="localhost:$REGISTRY_PORT/${BUNDLE_IMG#*/}"

step_no=0
STEPS=9
log() { printf '[test-kind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
step() { step_no=$((step_no + 1)); log "step $step_no/$STEPS: $*"; }
die() { log "ERROR: $*"; exit 1; }

# -- 1. tools --------------------------------------------------------------------------------------
step "checking the tools (kind, $PROVIDER, kubectl, helm, $OPERATOR_SDK)"
case "$PROVIDER" in
  docker | podman) ;;
  *) die "KIND_EXPERIMENTAL_PROVIDER=$PROVIDER: this script supports docker (the default) and podman" ;;
esac
missing=()
need() {  # $1 = command, $2 = how to get it
  command -v "$1" >/dev/null 2>&1 || missing+=("'$1' not found on PATH: $2")
}
need kind "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation), e.g. go install sigs.k8s.io/kind@latest"
need "$PROVIDER" "kind runs its nodes in $PROVIDER containers; install it, or set KIND_EXPERIMENTAL_PROVIDER=podman|docker"
need kubectl "install kubectl (https://kubernetes.io/docs/tasks/tools/)"
need helm "install helm 3 (https://helm.sh/docs/intro/install/)"
need "$OPERATOR_SDK" "install operator-sdk (https://sdk.operatorframework.io/docs/installation/) or set OPERATOR_SDK=/path/to/operator-sdk"
need make "install make"
if [ ${#missing[@]} -gt 0 ]; then
  for line in "${missing[@]}"; do log "ERROR: $line"; done
  die "missing tools: install them and run \`make test-kind\` again"
fi
"$PROVIDER" info >/dev/null 2>&1 || die "'$PROVIDER info' failed: is the $PROVIDER engine running and usable by $(id -un)?"
[ -x "$PYTHON" ] || die "$PYTHON not found: run \`make venv\` first (\`make test-kind\` does)"
export KIND_EXPERIMENTAL_PROVIDER=$PROVIDER
# make docker-build / bundle-build must put the images where `kind load docker-image` reads them.
export CONTAINER_TOOL=$PROVIDER

# -- 2. cluster and registry -----------------------------------------------------------------------
step "kind cluster '$KIND_CLUSTER' and local registry '$REGISTRY_NAME' (127.0.0.1:$REGISTRY_PORT)"
workdir=$(mktemp -d)
created_registry=0
cleanup() {
  local status=$?
  if [ "$KEEP_CLUSTER" = 1 ]; then
    log "KEEP_CLUSTER=1: keeping kind cluster '$KIND_CLUSTER' (kind get kubeconfig --name $KIND_CLUSTER)"
  elif kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    log "deleting kind cluster '$KIND_CLUSTER' (KEEP_CLUSTER=1 keeps it)"
    kind delete cluster --name "$KIND_CLUSTER" || true
    if [ "$created_registry" = 1 ]; then "$PROVIDER" rm -f "$REGISTRY_NAME" >/dev/null || true; fi
  fi
  rm -rf "$workdir"
  if [ "$status" -ne 0 ]; then log "FAILED (exit $status) at step $step_no/$STEPS"; fi
}
trap cleanup EXIT

if [ "$("$PROVIDER" inspect -f '{{.State.Running}}' "$REGISTRY_NAME" 2>/dev/null || true)" != true ]; then
  "$PROVIDER" rm -f "$REGISTRY_NAME" >/dev/null 2>&1 || true
  "$PROVIDER" run -d --restart=always -p "127.0.0.1:$REGISTRY_PORT:5000" --name "$REGISTRY_NAME" \
    docker.io/library/registry:2 >/dev/null
  created_registry=1
fi
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  log "kind cluster '$KIND_CLUSTER' exists: using it"
else
  node_image=()
  if [ -n "${KIND_NODE_IMAGE:-}" ]; then node_image=(--image "$KIND_NODE_IMAGE"); fi
  # containerd reads registry hosts from /etc/containerd/certs.d (written below for the registry).
  kind create cluster --name "$KIND_CLUSTER" ${node_image[@]+"${node_image[@]}"} --wait 180s --config - <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
EOF
fi
# Nodes pull localhost:<port>/... from the registry container over the kind network.
for node in $(kind get nodes --name "$KIND_CLUSTER"); do
  "$PROVIDER" exec "$node" mkdir -p "/etc/containerd/certs.d/localhost:$REGISTRY_PORT"
  printf '[host."http://%s:5000"]\n' "$REGISTRY_NAME" |
    "$PROVIDER" exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/localhost:$REGISTRY_PORT/hosts.toml"
done
if ! "$PROVIDER" inspect -f '{{json .NetworkSettings.Networks}}' "$REGISTRY_NAME" | grep -q '"kind"'; then
  "$PROVIDER" network connect kind "$REGISTRY_NAME"
fi
kind get kubeconfig --name "$KIND_CLUSTER" >"$workdir/kubeconfig"
export KUBECONFIG=$workdir/kubeconfig
kubectl wait --for=condition=Ready nodes --all --timeout=180s >/dev/null
log "KUBECONFIG=$KUBECONFIG"
kubectl version

# -- 3. images -------------------------------------------------------------------------------------
step "images: make docker-build IMG=$IMG, make bundle-build BUNDLE_IMG=$BUNDLE_IMG, kind load, registry push"
make --no-print-directory docker-build IMG="$IMG" VERSION="$VERSION"
make --no-print-directory bundle-build BUNDLE_IMG="$BUNDLE_IMG"
# The e2e tests load the images their manifests name themselves (tests/e2e/conftest.py, the same
# ImageLoader code path as the local real node, here KindLoader with KIND_CLUSTER); this step only
# loads what the script's own Helm and OLM steps run.
"$PROVIDER" tag "$BUNDLE_IMG" "$REGISTRY_BUNDLE_IMG"
kind load docker-image --name "$KIND_CLUSTER" "$IMG" "$BUNDLE_IMG"
push_flags=()
if [ "$PROVIDER" = podman ]; then push_flags=(--tls-verify=false); fi
"$PROVIDER" push ${push_flags[@]+"${push_flags[@]}"} "$REGISTRY_BUNDLE_IMG"

# The toolchain the tests call by its pinned path (helm, kubectl; opm, olm, catalog for the OLM test).
hack/build-tools.sh kubectl helm opm olm catalog

# -- 4. Helm ---------------------------------------------------------------------------------------
step "Helm: make deploy IMG=$IMG (namespace sampledb-system)"
make --no-print-directory deploy IMG="$IMG" VERSION="$VERSION" HELM="$(command -v helm)"
crd_ca() { kubectl get crd sampledbs.sampledb.io -o jsonpath='{.spec.conversion.webhook.clientConfig.caBundle}'; }
for _ in $(seq 60); do [ -n "$(crd_ca)" ] && break; sleep 2; done
[ -n "$(crd_ca)" ] || die "the operator did not put the webhook CA into the SampleDB CRD within 120 s"
log "the conversion webhook is wired; scaling the installed operator to 0 for the integration tests"
kubectl -n sampledb-system scale deployment sampledb-operator --replicas=0
kubectl -n sampledb-system rollout status deployment sampledb-operator --timeout=120s

# -- 5. integration tests --------------------------------------------------------------------------
step "integration tests against kind (KUBECONFIG), without the local-control-plane tests"
"$PYTHON" -m pytest tests/integration --ignore=tests/integration/test_cluster.py ${pytest_args[@]+"${pytest_args[@]}"}

# -- 6. e2e tests ----------------------------------------------------------------------------------
step "e2e tests against kind (Helm chart, OLM), after make undeploy"
make --no-print-directory undeploy HELM="$(command -v helm)"
KIND_CLUSTER="$KIND_CLUSTER" CONTAINER_TOOL="$PROVIDER" "$PYTHON" -m pytest tests/e2e --ignore=tests/e2e/test_image.py ${pytest_args[@]+"${pytest_args[@]}"}

# -- 7. OLM: operator-sdk run bundle ---------------------------------------------------------------
step "OLM: operator-sdk run bundle $REGISTRY_BUNDLE_IMG"
if ! "$OPERATOR_SDK" olm status >/dev/null 2>&1; then
  "$OPERATOR_SDK" olm install --timeout 5m
fi
olm_namespace="sampledb-olm-$(date +%s)"
kubectl create namespace "$olm_namespace"
# --use-http: the local registry serves plain HTTP; AllNamespaces: the only install mode of the CSV.
"$OPERATOR_SDK" run bundle "$REGISTRY_BUNDLE_IMG" --namespace "$olm_namespace" \
  --install-mode AllNamespaces --use-http --timeout 5m
csv=$("$PYTHON" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["metadata"]["name"])' \
  bundle/manifests/sampledb-operator.clusterserviceversion.yaml)
kubectl -n "$olm_namespace" wait "csv/$csv" --for=jsonpath='{.status.phase}'=Succeeded --timeout=300s
log "CSV $csv is Succeeded in namespace $olm_namespace"

# -- 8. scorecard ----------------------------------------------------------------------------------
step "operator-sdk scorecard bundle (namespace $olm_namespace)"
"$OPERATOR_SDK" scorecard bundle --namespace "$olm_namespace" --wait-time 180s
"$OPERATOR_SDK" cleanup sampledb-operator --namespace "$olm_namespace" --timeout 3m || true

# -- 9. clean-up (the EXIT trap) -------------------------------------------------------------------
step "done: every step passed"
