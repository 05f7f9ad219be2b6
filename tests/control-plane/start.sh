#!/usr/bin/env bash
# Starts a real Kubernetes control plane on loopback for the test suite:
# etcd, kube-apiserver (secure port, generated certificates, audit log),
# kube-controller-manager, kube-scheduler and kwok (fake nodes whose pods
# become Running), then waits until all are ready.
#
#   start.sh STATE_DIR [--real-node]
#       → prints `export KUBECONFIG=...` lines (also written to STATE_DIR/env);
#         stop with stop.sh STATE_DIR
#
# --real-node adds one real node (node.sh): the whole plane then runs in a
# private network namespace with containerd, a kubelet, kube-proxy and
# CoreDNS, the host reaching the API server through a loopback port as
# without it. Needs root; one such plane at a time.
#
# Every process runs in its own session with its pid recorded in STATE_DIR;
# logs are in STATE_DIR/logs. On any start-up failure the logs are printed
# and the script stops everything it started and exits non-zero.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${1:?usage: start.sh STATE_DIR [--real-node]}"
real_node=false
case "${2:-}" in
  "") ;;
  --real-node) real_node=true ;;
  *) echo "usage: start.sh STATE_DIR [--real-node]" >&2; exit 2 ;;
esac
mkdir -p "$state"/{pki,logs,etcd,pids}
state="$(cd "$state" && pwd -P)"
bin="$("$here/build.sh")/bin"
source "$here/versions.env"

# Free loopback ports, so several planes (or a developer's) can coexist. All
# are picked in one call while every socket is still bound, so they differ;
# another process can still take one before etcd or the API server binds it,
# so those two are relaunched on fresh ports when that happens (see
# launch_listening). kube-controller-manager and kube-scheduler serve nothing
# the tests read (--secure-port 0) and kwok binds a port of the kernel's choice.
# in_ns: the command prefix that runs a plane component in the plane's network
# namespace (empty without a real node: the host's).
in_ns=()
ports() { # count → that many distinct free ports, space-separated
  "${in_ns[@]}" python3 -c 'import socket,sys
socks=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

fail() {
  echo "control plane failed to start: $*" >&2
  for f in "$state"/logs/*.log; do echo "==== $f (last 40 lines)" >&2; tail -40 "$f" >&2 || true; done
  "$here/stop.sh" "$state" >&2 || true
  exit 1
}

launch() { # name, command...
  local name=$1; shift
  setsid "$@" > "$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/pids/$name"
}

ready_within() { # seconds, name, command... → 0 when the command succeeds, 1 when name exited or time ran out
  local secs=$1 name=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do
    if "$@" > /dev/null 2>&1; then return 0; fi
    kill -0 "$(cat "$state/pids/$name")" 2> /dev/null || return 1
    sleep 0.2
  done
  return 1
}

wait_for() { # description, seconds, command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do
    if "$@" > /dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  fail "$what did not become ready within ${secs}s"
}

# Start a component that listens on ports picked by `ports`: up to 3 tries,
# each on fresh ports, when its log says a port was taken in between.
#   launch_listening NAME SECONDS PICK READY_COMMAND
# PICK is a function that picks the ports into variables and launches NAME;
# READY_COMMAND (a function name) succeeds once it serves.
launch_listening() {
  local name=$1 secs=$2 pick=$3 ready=$4
  for attempt in 1 2 3; do
    "$pick"
    if ready_within "$secs" "$name" "$ready"; then return 0; fi
    if grep -qi "address already in use" "$state/logs/$name.log" && [ "$attempt" -lt 3 ]; then
      echo "$name: a port was taken before it bound it; retrying on other ports" >&2
      kill -TERM -- "-$(cat "$state/pids/$name")" 2> /dev/null || true
      sleep 0.5
      mv "$state/logs/$name.log" "$state/logs/$name.attempt-$attempt.log"
      continue
    fi
    break
  done
  fail "$name did not become ready within ${secs}s"
}

if $real_node; then
  source "$here/node.sh"
  node_preflight
  node_netns_up
  api_bind=0.0.0.0 api_advertise=$NODE_IP api_san=",IP:$NODE_IP"
  api_node_flags=(--kubelet-client-certificate "$state/pki/apiserver-kubelet-client.crt"
    --kubelet-client-key "$state/pki/apiserver-kubelet-client.key"
    --kubelet-preferred-address-types InternalIP)
else
  api_bind=127.0.0.1 api_advertise=127.0.0.1 api_san="" api_node_flags=()
fi

# --- certificates -----------------------------------------------------------
pki="$state/pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=paperbot-test-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2> /dev/null
sign() { # name, subject, extensions
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2> /dev/null
  printf '%s\n' "$3" > "$pki/$1.ext"
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/$1.ext" -out "$pki/$1.crt" 2> /dev/null
}
sign apiserver "/CN=kube-apiserver" \
  "subjectAltName=IP:127.0.0.1,IP:10.96.0.1${api_san},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth"
sign admin "/O=system:masters/CN=paperbot-test-admin" "extendedKeyUsage=clientAuth"
$real_node && node_certs
openssl genrsa -out "$pki/sa.key" 2048 2> /dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2> /dev/null

# The host's kubeconfigs; the plane's own components use inner_kubeconfig,
# the same file without a real node, else one for the API server's port in
# the network namespace.
kubeconfig="$state/admin.kubeconfig"
inner_kubeconfig="$kubeconfig"
$real_node && inner_kubeconfig="$state/admin-in-netns.kubeconfig"
write_kubeconfigs() { # port → the admin and extra kubeconfigs for https://127.0.0.1:port
  cat > "$kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:$1", certificate-authority: "$pki/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$pki/admin.crt", client-key: "$pki/admin.key"}
contexts:
- name: test
  context: {cluster: test, user: admin, namespace: default}
current-context: test
KC
  for user in operator-a operator-b; do
    sed -e "s#$pki/admin.crt#$pki/$user.crt#" -e "s#$pki/admin.key#$pki/$user.key#" -e "s#name: admin#name: $user#" \
      -e "s#user: admin#user: $user#" "$kubeconfig" > "$state/$user.kubeconfig"
  done
}

# Extra identities (cluster-admin) for tests that need two distinct clients:
# operator-a.kubeconfig, operator-b.kubeconfig. The operator itself runs in
# the tests under its chart's ServiceAccount (tests/src/lib.rs,
# `operator_identity`), which API Priority and Fairness throttles like in a
# real cluster; system:masters is exempt.
for user in operator-a operator-b; do
  sign "$user" "/O=system:masters/CN=$user" "extendedKeyUsage=clientAuth"
done

# Audit every request (metadata only) so tests can count requests. The log
# rotates at 100 MB (audit-<time>.jsonl beside audit.jsonl); readers take all files.
cat > "$state/audit-policy.yaml" <<'AP'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
AP

# --- etcd, API server, controllers, scheduler --------------------------------
start_etcd() {
  read -r ETCD_PORT ETCD_PEER < <(ports 2)
  launch etcd "${in_ns[@]}" "$bin/etcd" --name test --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:${ETCD_PORT}" --advertise-client-urls "http://127.0.0.1:${ETCD_PORT}" \
    --listen-peer-urls "http://127.0.0.1:${ETCD_PEER}" --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER}" \
    --initial-cluster "test=http://127.0.0.1:${ETCD_PEER}" --unsafe-no-fsync --log-level warn
}
etcd_ready() { "${in_ns[@]}" curl -sf "http://127.0.0.1:${ETCD_PORT}/health"; }
launch_listening etcd 30 start_etcd etcd_ready

start_apiserver() {
  read -r API_PORT < <(ports 1)
  if $real_node; then
    node_kubeconfig "$inner_kubeconfig" "https://127.0.0.1:${API_PORT}" admin
  else
    write_kubeconfigs "$API_PORT"
  fi
  launch kube-apiserver "${in_ns[@]}" "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:${ETCD_PORT}" \
    --bind-address "$api_bind" --advertise-address "$api_advertise" --secure-port "${API_PORT}" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode Node,RBAC --allow-privileged=true \
    --audit-policy-file "$state/audit-policy.yaml" --audit-log-path "$state/logs/audit.jsonl" \
    --audit-log-format json --audit-log-mode blocking "${api_node_flags[@]}"
}
apiserver_ready() { "${in_ns[@]}" "$bin/kubectl" --kubeconfig "$inner_kubeconfig" get --raw /readyz; }
launch_listening kube-apiserver 90 start_apiserver apiserver_ready
$real_node && node_api_bridge

launch kube-controller-manager "${in_ns[@]}" "$bin/kube-controller-manager" \
  --kubeconfig "$inner_kubeconfig" --authentication-kubeconfig "$inner_kubeconfig" --authorization-kubeconfig "$inner_kubeconfig" \
  --secure-port 0 --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --controllers '*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle' \
  --flex-volume-plugin-dir "$state/flex-volume-plugins"
launch kube-scheduler "${in_ns[@]}" "$bin/kube-scheduler" \
  --kubeconfig "$inner_kubeconfig" --authentication-kubeconfig "$inner_kubeconfig" --authorization-kubeconfig "$inner_kubeconfig" \
  --secure-port 0 --leader-elect=false

# --- kwok: fake nodes whose pods run ------------------------------------------
stages="$(go env GOMODCACHE)/sigs.k8s.io/kwok@${KWOK_VERSION}/kustomize/stage"
[ -d "$stages" ] || (cd "$here" && GOFLAGS=-mod=mod go mod download "sigs.k8s.io/kwok@${KWOK_VERSION}")
cat "$stages"/node/fast/*.yaml > "$state/kwok-stages.yaml"
for f in "$stages"/pod/fast/*.yaml; do echo "---" >> "$state/kwok-stages.yaml"; cat "$f" >> "$state/kwok-stages.yaml"; done
launch kwok "${in_ns[@]}" "$bin/kwok" --kubeconfig "$inner_kubeconfig" --config "$state/kwok-stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-ip 10.0.0.1 --cidr 10.244.0.0/16 --server-address 127.0.0.1:0

wait_for "default service account" 60 "$bin/kubectl" --kubeconfig "$kubeconfig" get serviceaccount default
for i in 1 2 3; do
  "$bin/kubectl" --kubeconfig "$kubeconfig" apply -f - > /dev/null <<NODE || fail "creating node kwok-node-$i"
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {node.alpha.kubernetes.io/ttl: "0", kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
NODE
done
wait_for "fake nodes" 60 "$bin/kubectl" --kubeconfig "$kubeconfig" wait --for=condition=Ready node --all --timeout=1s
# Admission taints new nodes not-ready; the node-lifecycle controller, which
# would lift the taint, is off (kwok's nodes send no kubelet heartbeats).
"$bin/kubectl" --kubeconfig "$kubeconfig" taint nodes --all node.kubernetes.io/not-ready:NoSchedule- > /dev/null 2>&1 || true

# --- the real node ------------------------------------------------------------
$real_node && node_start
for p in "$state"/pids/*; do kill -0 "$(cat "$p")" 2> /dev/null || fail "$(basename "$p") exited"; done

cat > "$state/env" <<ENV
export KUBECONFIG=$kubeconfig
export PAPERBOT_CP_BIN=$bin
export PAPERBOT_CP_AUDIT_LOG=$state/logs/audit.jsonl
ENV
$real_node && node_env >> "$state/env"
cat "$state/env"
