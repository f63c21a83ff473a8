#!/usr/bin/env bash
# The main job on a fresh machine (`make demo`): a local cluster, the CRDs and RBAC, the operator
# running out of cluster, and the sample SampleDB reconciled to Ready.
#
# Where the machine allows it (root, and Debian's packages installable as .ci/run does), the local
# cluster has a real node and the sample is a real PostgreSQL 17 in a Pod that answers queries;
# otherwise the demo says why and falls back to simulated (kwok) nodes. NODE=real or NODE=kwok
# forces the choice. With $KUBECONFIG set, the existing cluster is used instead of a local one.
# Everything started here is stopped by `make demo-down`.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PYTHON:=.venv/bin/python}" "${KUBECTL:=kubectl}" "${CLUSTER_DIR:=.local/cluster}" "${DEMO_DIR:=.local/demo}"
: "${NODE:=auto}"
repo=$(pwd)
started=$SECONDS
step() { printf '\n==> [%3ds] %s\n' "$((SECONDS - started))" "$*"; }
localcluster() { (cd operator && "$repo/$PYTHON" -m sampledb_localcluster --state-dir "$repo/$CLUSTER_DIR" "$@"); }

# Why this machine cannot run a real node ("" when it can), after installing what it may.
real_node_blocker() {
  [ "$(id -u)" = 0 ] || { echo "not root (containerd, network namespaces and mounts need it)"; return; }
  command -v apt-get >/dev/null || { echo "no apt-get to install containerd and the CNI plugins"; return; }
  hack/host-packages.sh node >&2 || { echo "the real node's Debian packages could not be installed"; return; }
}

operator_kubeconfig=${KUBECONFIG:-}
if [ -z "${KUBECONFIG:-}" ]; then
  if [ "$NODE" != kwok ]; then
    blocker=$(real_node_blocker)
    if [ -n "$blocker" ]; then
      [ "$NODE" = real ] && { echo "NODE=real: $blocker" >&2; exit 1; }
      echo "note: simulated nodes instead of a real node: $blocker" >&2
      NODE=kwok
    else
      NODE=real
      step "building the real node's tools and images (cached; minutes the first time)"
      make --no-print-directory node-tools
      hack/base-images.sh postgres-17 pause
    fi
  fi
  step "starting the local cluster in $CLUSTER_DIR ($NODE node)"
  localcluster up --node "$NODE" --pg-majors 17  # the sample's major
  eval "$(localcluster env)"
  operator_kubeconfig="$repo/$CLUSTER_DIR/operator.kubeconfig"
  CLUSTER_STARTED_HERE=1
fi
export KUBECONFIG

step "installing the CRDs and the operator's RBAC"
"$KUBECTL" apply --server-side -f crds/
"$KUBECTL" wait --for condition=established --timeout=60s -f crds/
if [ -n "${CLUSTER_STARTED_HERE:-}" ]; then
  # Pods are simulated here, so the API server calls the conversion webhook on loopback.
  step "starting the conversion webhook (log: $DEMO_DIR/webhook.log)"
  mkdir -p "$DEMO_DIR"
  mapfile -t tls < <(localcluster cert --out "$repo/$DEMO_DIR/tls")
  if ! { [ -f "$DEMO_DIR/webhook.pid" ] && kill -0 "$(cat "$DEMO_DIR/webhook.pid")" 2>/dev/null; }; then
    cd operator
    nohup "$repo/$PYTHON" -m sampledb_operator webhook --cert "${tls[0]}" --key "${tls[1]}" --host 127.0.0.1 \
      --port 19443 >"$repo/$DEMO_DIR/webhook.log" 2>&1 </dev/null &
    echo $! >"$repo/$DEMO_DIR/webhook.pid"
    cd "$repo"
  fi
  ca_bundle=$(base64 -w0 "${tls[2]}")
  "$KUBECTL" patch crd sampledbs.sampledb.io --type=merge -p "{\"spec\":{\"conversion\":{\"webhook\":{\"clientConfig\":{\"service\":null,\"url\":\"https://127.0.0.1:19443/convert\",\"caBundle\":\"$ca_bundle\"}}}}}"
fi
"$KUBECTL" apply -f config/rbac/role.yaml -f config/rbac/role_binding.yaml

# The operator's files live apart from the cluster's state folder, which the harness manages.
step "starting the operator (log: $DEMO_DIR/operator.log)"
mkdir -p "$DEMO_DIR"
if [ -f "$DEMO_DIR/operator.pid" ] && kill -0 "$(cat "$DEMO_DIR/operator.pid")" 2>/dev/null; then
  echo "already running (pid $(cat "$DEMO_DIR/operator.pid"))"
else
  cd operator
  KUBECONFIG="$operator_kubeconfig" SAMPLEDB_METRICS_PORT=18080 SAMPLEDB_HEALTH_PORT=18081 \
    nohup "$repo/$PYTHON" -m sampledb_operator run >"$repo/$DEMO_DIR/operator.log" 2>&1 </dev/null &
  echo $! >"$repo/$DEMO_DIR/operator.pid"
  cd "$repo"
fi
for _ in $(seq 60); do
  curl -fsS http://127.0.0.1:18081/healthz >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS http://127.0.0.1:18081/healthz >/dev/null || { tail -30 "$DEMO_DIR/operator.log"; exit 1; }

step "applying config/samples/sampledb_v1.yaml"
"$KUBECTL" apply -f config/samples/sampledb_v1.yaml
"$KUBECTL" wait --for=jsonpath='{.status.phase}'=Ready sampledb/demo --timeout=180s

step "reconciled"
"$KUBECTL" get sampledb demo -o wide
"$KUBECTL" get statefulset,pod,service,pvc,secret,configmap,pdb,job -l sampledb.io/instance=demo
"$KUBECTL" get events --field-selector involvedObject.name=demo
connect="kubectl exec demo-0 -c postgres -- psql -h /var/run/postgresql -U postgres -c 'select version()'"
if [ "${NODE:-}" = real ]; then
  step "the database answers (a real PostgreSQL in a Pod on the real node)"
  "$KUBECTL" exec demo-0 -c postgres -- psql -h /var/run/postgresql -U postgres -Atc 'select version()'
fi
if [ -n "${CLUSTER_STARTED_HERE:-}" ]; then
  step "the same object through the deprecated v1beta1 API (converted by the webhook)"
  "$KUBECTL" get sampledbs.v1beta1.sampledb.io demo -o jsonpath='{.apiVersion} version={.spec.version} storageSize={.spec.storageSize}{"\n"}'
fi
cat <<EOF

The sample database is Ready ($((SECONDS - started)) s). Try:
  export KUBECONFIG=$KUBECONFIG
  $([ "${NODE:-}" = kwok ] && echo "# simulated nodes: nothing runs inside the Pods, so this one does not answer:")
  $connect
  kubectl explain sampledb.spec.postgres
  kubectl describe sampledb demo
  curl -s http://127.0.0.1:18080/metrics | grep ^sampledb_
Stop everything with: make demo-down
EOF
