# The real node of the test control plane (`start.sh STATE --real-node`):
# functions sourced by start.sh (bring-up) and stop.sh (teardown). Not run
# directly.
#
# Layout. The whole plane (etcd, API server, controllers, scheduler, kwok)
# and the node (containerd, kubelet, kube-proxy, pods) live in one private
# network namespace, NODE_NETNS, whose only interfaces are loopback, a veth
# pair node0/gw0 (both ends inside; node0 holds NODE_IP, which the kubelet
# needs because it refuses a loopback node IP) and the CNI bridge cni0 of the
# pods (POD_CIDR). The machine's own network is not touched. Processes enter
# only the network namespace (`nsenter --net`), not a mount namespace, so the
# kubelet's volume mounts and containerd's rootfs mounts are seen by both.
# The host reaches the API server through a loopback port: socat on the host
# forwards it over a unix socket in STATE to socat in the namespace
# (node_api_bridge). host-port.sh makes a host loopback port reachable from
# pods the same way, in the other direction.
#
# Everything the node writes is under STATE/node (containerd root, state,
# socket, runc root, CNI config and IPAM data, kubelet root, pod logs), except
# what the kubelet and containerd write to fixed places: host sysctls
# (HOST_SYSCTLS), a few fixed paths (FIXED_PATHS), `kubepods` cgroups and the
# pods' network namespaces in /run/netns. Those are recorded before start in
# NODE_RECORD and put back by node_clean. One real-node plane runs at a time
# (the namespace name and those host paths are fixed); a start finding a
# stale one (its processes gone, e.g. a test process killed) cleans it first.

NODE_NAME=paperbot-node
NODE_NETNS=paperbot-node
NODE_IP=10.200.0.2
POD_CIDR=10.244.0.0/24
CLUSTER_DNS=10.96.0.10
NODE_TAINT=paperbot.io/real-node=true:NoSchedule
NODE_LABEL=paperbot.io/real-node=true
NODE_RECORD=/run/paperbot-node
HOST_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
FIXED_PATHS=(/run/containerd /var/lib/cni /var/lib/kubelet /var/log/containers /var/log/pods /run/netns /etc/cni /opt/cni /opt/containerd /usr/libexec/kubernetes)
NODE_APT="apt-get install containerd runc containernetworking-plugins iptables socat iproute2 util-linux busybox-static gcc libc6-dev"
CNI_BIN=/usr/lib/cni
in_node_ns=(nsenter "--net=/run/netns/$NODE_NETNS" --)

node_dir() { echo "$state/node"; }

# Whether pid runs: exists and is not a zombie (the machine's init may reap
# exited processes only every few seconds, and `kill -0` succeeds on zombies).
proc_running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2> /dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# --- bring-up ---------------------------------------------------------------

# Root, the tools, the kernel features; no other real-node plane running.
node_preflight() {
  [ "$(id -u)" = 0 ] || fail "a real node needs root (network namespace, mounts, cgroups); run the tests as root"
  local missing=()
  for t in containerd containerd-shim-runc-v2 runc ctr socat iptables nsenter ip gcc busybox; do
    command -v "$t" > /dev/null || missing+=("$t")
  done
  for p in bridge host-local loopback; do [ -x "$CNI_BIN/$p" ] || missing+=("$CNI_BIN/$p"); done
  [ ${#missing[@]} -eq 0 ] || fail "the real node needs ${missing[*]} (Debian: $NODE_APT)"
  [ -d /proc/sys/net/bridge ] || modprobe br_netfilter 2> /dev/null || true
  [ -d /proc/sys/net/bridge ] || fail "the kernel has no br_netfilter (needed for Services between pods on the node's bridge)"
  grep -qw overlay /proc/filesystems || modprobe overlay 2> /dev/null || true
  grep -qw overlay /proc/filesystems || fail "the kernel has no overlay filesystem (containerd's snapshotter)"
  if [ -e "/run/netns/$NODE_NETNS" ] || [ -d "$NODE_RECORD" ]; then
    local owner
    owner=$(cat "$NODE_RECORD/state" 2> /dev/null || echo "")
    if [ -n "$owner" ] && node_alive "$owner"; then
      echo "control plane failed to start: a real-node plane is already running (state $owner); stop it first: tests/control-plane/stop.sh $owner" >&2
      exit 1 # not `fail`: its stop.sh would stop this state, not the other plane
    fi
    echo "cleaning up a stale real-node plane (state ${owner:-unknown}): its processes are gone" >&2
    if [ -n "$owner" ] && [ -d "$owner/pids" ]; then
      "$here/stop.sh" "$owner" >&2
    else
      (state=/nonexistent; node_clean) >&2
    fi
  fi
}

# Whether any recorded process of the plane at STATE is alive.
node_alive() {
  local p
  for p in "$1"/pids/*; do
    [ -f "$p" ] && proc_running "$(cat "$p")" && return 0
  done
  return 1
}

# Record what the node changes on the host, then make the network namespace.
node_netns_up() {
  mkdir -p "$NODE_RECORD" "$(node_dir)"
  echo "$state" > "$NODE_RECORD/state"
  local s p
  for s in "${HOST_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done > "$NODE_RECORD/sysctls"
  for p in "${FIXED_PATHS[@]}"; do [ -e "$p" ] || echo "$p"; done > "$NODE_RECORD/absent-paths"
  if mountpoint -q /run/netns 2> /dev/null; then echo yes; else echo no; fi > "$NODE_RECORD/run-netns-was-mounted"
  ls /run/netns 2> /dev/null > "$NODE_RECORD/netns-before" || true
  ip netns add "$NODE_NETNS" || fail "creating network namespace $NODE_NETNS"
  local n=("${in_node_ns[@]}")
  "${n[@]}" ip link set lo up &&
    "${n[@]}" ip link add node0 type veth peer name gw0 &&
    "${n[@]}" ip addr add "$NODE_IP/24" dev node0 &&
    "${n[@]}" ip link set node0 up &&
    "${n[@]}" ip link set gw0 up &&
    "${n[@]}" ip route add default dev node0 &&
    "${n[@]}" sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 ||
    fail "setting up the network of namespace $NODE_NETNS"
  # The plane's ports are picked inside the namespace.
  in_ns=("${in_node_ns[@]}")
}

# Certificates of the node (client and serving: /O=system:nodes/CN=system:node:NAME,
# which the Node authorizer accepts), kube-proxy (system:kube-proxy, bound to
# system:node-proxier by default) and the API server's client to the kubelet.
node_certs() {
  sign node "/O=system:nodes/CN=system:node:$NODE_NAME" \
    "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME
extendedKeyUsage=serverAuth,clientAuth"
  sign kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
}

# A kubeconfig FILE for the server URL with a client certificate NAME from pki.
node_kubeconfig() { # file, server, cert name
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "$2", certificate-authority: "$pki/ca.crt"}
users:
- name: $3
  user: {client-certificate: "$pki/$3.crt", client-key: "$pki/$3.key"}
contexts:
- name: test
  context: {cluster: test, user: $3}
current-context: test
KC
}

# The host's loopback port HOST_API_PORT → unix socket → the API server in
# the namespace; then the host kubeconfigs point at it.
node_api_bridge() {
  local sock="$(node_dir)/api.sock"
  launch api-bridge-ns "${in_node_ns[@]}" socat "UNIX-LISTEN:$sock,fork,unlink-early" "TCP:127.0.0.1:$API_PORT"
  start_host_bridge() {
    read -r HOST_API_PORT < <(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    write_kubeconfigs "$HOST_API_PORT"
    launch api-bridge-host socat "TCP-LISTEN:$HOST_API_PORT,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$sock"
  }
  host_api_ready() { "$bin/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz; }
  launch_listening api-bridge-host 30 start_host_bridge host_api_ready
}

# containerd, images, kubelet, kube-proxy and CoreDNS; waits until the node
# is Ready and cluster DNS serves.
node_start() {
  local node
  node="$(node_dir)"
  node_image_names
  mkdir -p "$node"/{containerd,cni/net.d,cni/ipam,kubelet,pod-logs,volume-plugins,runc}
  node_containerd
  node_images
  node_kubelet
  node_kube_proxy
  node_coredns
}

node_containerd() {
  local node sock
  node="$(node_dir)"
  sock="$node/containerd/containerd.sock"
  cat > "$node/cni/net.d/10-paperbot.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "paperbot",
  "plugins": [{
    "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$node/cni/ipam"}
  }]
}
CNI
  # restrict_oom_score_adj: the machine lacks CAP_SYS_RESOURCE, so runc
  # cannot lower oom_score_adj below its own (every sandbox fails without it).
  cat > "$node/containerd.toml" <<TOML
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$node/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$node/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$node/cni/net.d"
    max_conf_num = 1
TOML
  CONTAINERD_SOCKET=$sock
  launch containerd "${in_node_ns[@]}" containerd --config "$node/containerd.toml"
  containerd_ready() { ctr --address "$sock" version; }
  ready_within 30 containerd containerd_ready || fail "containerd did not become ready within 30s"
}

# Names of the node's images: the sandbox image tagged as the pause.c of the
# kubernetes module (its build/pause/Makefile's TAG), CoreDNS as the build's
# version, busybox as the installed busybox-static.
node_image_names() {
  local make
  make="$(go env GOMODCACHE)/k8s.io/kubernetes@${K8S_VERSION}/build/pause/Makefile"
  [ -f "$make" ] || (cd "$here" && GOFLAGS=-mod=mod go mod download "k8s.io/kubernetes@${K8S_VERSION}") ||
    fail "downloading k8s.io/kubernetes@${K8S_VERSION} (for build/pause)"
  PAUSE_TAG=$(sed -n 's/^TAG ?= *//p' "$make")
  [ -n "$PAUSE_TAG" ] || fail "no TAG in $make"
  PAUSE_IMAGE="paperbot.test/pause:$PAUSE_TAG"
  COREDNS_IMAGE="paperbot.test/coredns:${COREDNS_VERSION#v}"
  BUSYBOX_TAG=$(busybox 2>&1 | sed -n '1s/^BusyBox v\([0-9.]*\).*/\1/p')
  [ -n "$BUSYBOX_TAG" ] || fail "cannot read busybox's version"
  BUSYBOX_IMAGE="paperbot.test/busybox:$BUSYBOX_TAG"
}

# The node's images, assembled once per version into the build cache with
# oci-image.sh and imported into containerd: the sandbox ("pause") image built
# from the kubernetes module's pause.c, CoreDNS from the coredns binary of the
# build, and busybox (Debian's busybox-static) for tests.
node_images() {
  local images dir tmp
  images="$(dirname "$bin")/images"
  mkdir -p "$images"
  if [ ! -f "$images/pause.tar" ]; then
    tmp=$(mktemp -d -t paperbot-node-image.XXXXXX)
    dir="$(go env GOMODCACHE)/k8s.io/kubernetes@${K8S_VERSION}/build/pause/linux"
    gcc -Os -Wall -static -DVERSION="v${PAUSE_TAG}" -o "$tmp/pause" "$dir/pause.c" || fail "compiling pause.c (gcc -static; Debian: libc6-dev)"
    "$here/oci-image.sh" "$PAUSE_IMAGE" -o "$tmp/pause.tar" --entrypoint /pause --user 65535:65535 "$tmp/pause:/pause" ||
      fail "assembling the pause image"
    mv "$tmp/pause.tar" "$images/pause.tar"
    rm -rf "$tmp"
  fi
  if [ ! -f "$images/coredns.tar" ]; then
    tmp=$(mktemp -d -t paperbot-node-image.XXXXXX)
    "$here/oci-image.sh" "$COREDNS_IMAGE" -o "$tmp/coredns.tar" --entrypoint /coredns --user 65532:65532 "$bin/coredns:/coredns" ||
      fail "assembling the coredns image"
    mv "$tmp/coredns.tar" "$images/coredns.tar"
    rm -rf "$tmp"
  fi
  if [ ! -f "$images/busybox-$BUSYBOX_TAG.tar" ]; then
    tmp=$(mktemp -d -t paperbot-node-image.XXXXXX)
    mkdir -p "$tmp/root/bin" "$tmp/root/tmp"
    chmod 1777 "$tmp/root/tmp"
    cp "$(command -v busybox)" "$tmp/root/bin/busybox"
    ldd "$tmp/root/bin/busybox" > /dev/null 2>&1 &&
      fail "$(command -v busybox) is dynamically linked; the image needs a static one (Debian: busybox-static)"
    local applet
    for applet in $("$tmp/root/bin/busybox" --list); do
      [ "$applet" = busybox ] || ln -s busybox "$tmp/root/bin/$applet"
    done
    "$here/oci-image.sh" "$BUSYBOX_IMAGE" -o "$tmp/busybox.tar" --entrypoint /bin/sh "$tmp/root:/" ||
      fail "assembling the busybox image"
    mv "$tmp/busybox.tar" "$images/busybox-$BUSYBOX_TAG.tar"
    rm -rf "$tmp"
  fi
  local t
  for t in "$images/pause.tar" "$images/coredns.tar" "$images/busybox-$BUSYBOX_TAG.tar"; do
    ctr --address "$CONTAINERD_SOCKET" -n k8s.io images import "$t" > /dev/null || fail "importing $t into containerd"
  done
}

node_kubelet() {
  local node
  node="$(node_dir)"
  node_kubeconfig "$node/kubelet.kubeconfig" "https://127.0.0.1:$API_PORT" node
  printf '# the test node has no upstream DNS; pods use the cluster DNS\n' > "$node/resolv.conf"
  cat > "$node/kubelet.yaml" <<KUBELET
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$pki/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$pki/node.crt"
tlsPrivateKeyFile: "$pki/node.key"
rotateCertificates: false
serverTLSBootstrap: false
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCKET"
imageServiceEndpoint: "unix://$CONTAINERD_SOCKET"
cgroupDriver: cgroupfs
failSwapOn: false
clusterDNS: [$CLUSTER_DNS]
clusterDomain: cluster.local
resolvConf: "$node/resolv.conf"
podLogsDir: "$node/pod-logs"
volumePluginDir: "$node/volume-plugins"
registerWithTaints:
- {key: "${NODE_TAINT%%=*}", value: "true", effect: NoSchedule}
# The disk is shared with other work (the build, caches, other tests): no
# evictions or image collection because it is fuller than a production node's
# thresholds. Absolute floors, not percentages: 1 % of a 252 GB shared disk
# (2.5 GB) was crossed in CI and evicted the operator pod in a loop.
evictionHard: {memory.available: 100Mi, nodefs.available: 200Mi, nodefs.inodesFree: "1%", imagefs.available: 200Mi, imagefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
KUBELET
  launch kubelet "${in_node_ns[@]}" "$bin/kubelet" --config "$node/kubelet.yaml" \
    --kubeconfig "$node/kubelet.kubeconfig" --root-dir "$node/kubelet" --cert-dir "$node/kubelet/pki" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --node-labels "$NODE_LABEL" \
    --pod-infra-container-image "$PAUSE_IMAGE"
  node_registered() { "$bin/kubectl" --kubeconfig "$kubeconfig" get node "$NODE_NAME"; }
  ready_within 60 kubelet node_registered || fail "the kubelet did not register node $NODE_NAME within 60s"
  node_ready() { "$bin/kubectl" --kubeconfig "$kubeconfig" wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s; }
  ready_within 90 kubelet node_ready || fail "node $NODE_NAME did not become Ready within 90s"
  # Admission taints a new node not-ready and the node-lifecycle controller,
  # which would lift it, is off.
  "$bin/kubectl" --kubeconfig "$kubeconfig" taint node "$NODE_NAME" node.kubernetes.io/not-ready:NoSchedule- > /dev/null 2>&1 || true
}

node_kube_proxy() {
  local node
  node="$(node_dir)"
  node_kubeconfig "$node/kube-proxy.kubeconfig" "https://127.0.0.1:$API_PORT" kube-proxy
  # conntrack sizes and timeouts 0: kube-proxy leaves the kernel's values
  # alone (nf_conntrack_max is machine-wide, and CAP_SYS_RESOURCE is missing).
  cat > "$node/kube-proxy.yaml" <<PROXY
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$node/kube-proxy.kubeconfig"}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
PROXY
  launch kube-proxy "${in_node_ns[@]}" "$bin/kube-proxy" --config "$node/kube-proxy.yaml"
  proxy_ready() { "${in_node_ns[@]}" curl -sf http://127.0.0.1:10256/healthz; }
  ready_within 60 kube-proxy proxy_ready || fail "kube-proxy did not become healthy within 60s"
}

# CoreDNS as a real pod: ServiceAccount, RBAC, Corefile, Deployment on the
# real node, Service kube-dns at CLUSTER_DNS.
node_coredns() {
  sed -e "s#@COREDNS_IMAGE@#$COREDNS_IMAGE#g" -e "s#@CLUSTER_DNS@#$CLUSTER_DNS#g" \
    -e "s#@TAINT_KEY@#${NODE_TAINT%%=*}#g" -e "s#@NODE_LABEL_KEY@#${NODE_LABEL%%=*}#g" \
    "$here/coredns.yaml" | "$bin/kubectl" --kubeconfig "$kubeconfig" apply -f - > /dev/null ||
    fail "applying tests/control-plane/coredns.yaml"
  coredns_ready() {
    "$bin/kubectl" --kubeconfig "$kubeconfig" -n kube-system rollout status deployment/coredns --timeout=1s
  }
  ready_within 90 kubelet coredns_ready || fail "CoreDNS did not become ready within 90s"
  # Ready pods are not yet a serving Service: kube-proxy programs the
  # kube-dns ClusterIP a sync later. Wait until a lookup through the Service
  # address answers from the node's network namespace, as a pod's would.
  cluster_dns_serves() {
    timeout 2 "${in_node_ns[@]}" busybox nslookup kubernetes.default.svc.cluster.local "$CLUSTER_DNS" 2>&1 |
      grep -q '^Address: 10\.96\.0\.1$'
  }
  ready_within 60 kube-proxy cluster_dns_serves ||
    fail "cluster DNS at $CLUSTER_DNS did not answer kubernetes.default.svc.cluster.local within 60s (CoreDNS is Ready; check kube-proxy's kube-dns rules)"
}

# The variables start.sh adds to STATE/env for a real node.
node_env() {
  cat <<ENV
export PAPERBOT_NODE_NAME=$NODE_NAME
export PAPERBOT_NODE_IP=$NODE_IP
export PAPERBOT_NODE_NETNS=$NODE_NETNS
export PAPERBOT_NODE_TAINT=$NODE_TAINT
export PAPERBOT_NODE_LABEL=$NODE_LABEL
export PAPERBOT_CONTAINERD_SOCKET=$CONTAINERD_SOCKET
export PAPERBOT_BUSYBOX_IMAGE=$BUSYBOX_IMAGE
ENV
}

# --- teardown ---------------------------------------------------------------

# Kill (SIGKILL, by pid) the node's pods: the processes in `kubepods`
# cgroups and the runc shims of its containerd. Returns once none is left (or
# after 10 s).
node_kill_pods() { node_kill_until_none node_pod_pids; }

# Kill every process of the node: its pods and everything in its network
# namespace (the plane, containerd, the agents, host-network pods).
node_kill_all() { node_kill_until_none node_all_pids; }

node_kill_until_none() { # function listing the pids
  local pids
  for _ in $(seq 1 50); do
    pids=$("$1")
    [ -z "$pids" ] && return 0
    # shellcheck disable=SC2086
    kill -KILL $pids 2> /dev/null
    sleep 0.2
  done
  echo "stop.sh: processes of the real node still alive: $("$1" | tr '\n' ' ')" >&2
}

node_pod_pids() {
  {
    local f
    for f in $(find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods -name cgroup.procs 2> /dev/null); do
      cat "$f" 2> /dev/null
    done
    for f in /proc/[0-9]*/cmdline; do
      { tr '\0' ' ' < "$f"; } 2> /dev/null | grep -q -- "containerd-shim.* -address $state/node/" && { f=${f#/proc/}; echo "${f%/cmdline}"; }
    done
  } | sort -u | while read -r p; do proc_running "$p" && echo "$p"; done
}

node_all_pids() {
  {
    node_pod_pids
    [ -e "/run/netns/$NODE_NETNS" ] && ip netns pids "$NODE_NETNS" 2> /dev/null
  } | sort -u | while read -r p; do proc_running "$p" && echo "$p"; done
}

# Mount points the node made: anything under STATE, the kubelet's and
# containerd's fixed directories, and pod network namespaces created since start.
node_mounts() {
  local before="$NODE_RECORD/netns-before"
  awk '{print $5}' /proc/self/mountinfo | while read -r m; do
    case "$m" in
      "$state"/* | /var/lib/kubelet/* | /run/containerd/* | /var/run/netns/cni-*) echo "$m" ;;
      /run/netns/cni-*) grep -qxF "${m#/run/netns/}" "$before" 2> /dev/null || echo "$m" ;;
    esac
  done | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-
}

# Everything the node changed on the host, put back: processes, mounts,
# network namespaces, cgroups, sysctls, fixed paths. Only for the plane that
# owns the record (NODE_RECORD/state); after a clean there is nothing to do.
node_clean() {
  local owner
  owner=$(cat "$NODE_RECORD/state" 2> /dev/null) || return 0
  [ "$owner" = "$state" ] || [ "$state" = /nonexistent ] || {
    echo "stop.sh: the real node's host record belongs to $owner, not $state; left alone" >&2
    return 0
  }
  node_kill_all
  local m
  for _ in 1 2 3; do
    for m in $(node_mounts); do umount "$m" 2> /dev/null || umount -l "$m" 2> /dev/null; done
    [ -z "$(node_mounts)" ] && break
    sleep 0.2
  done
  [ -z "$(node_mounts)" ] || echo "stop.sh: mounts left: $(node_mounts | tr '\n' ' ')" >&2
  [ -e "/run/netns/$NODE_NETNS" ] && { ip netns del "$NODE_NETNS" 2> /dev/null || echo "stop.sh: could not delete network namespace $NODE_NETNS" >&2; }
  local n
  for n in /run/netns/cni-*; do
    [ -e "$n" ] || continue
    grep -qxF "${n#/run/netns/}" "$NODE_RECORD/netns-before" 2> /dev/null || rm -f "$n"
  done
  local d
  for _ in $(seq 1 25); do
    for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
      [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2> /dev/null
    done
    compgen -G '/sys/fs/cgroup/*/kubepods' > /dev/null || [ -d /sys/fs/cgroup/kubepods ] || break
    sleep 0.2
  done
  compgen -G '/sys/fs/cgroup/*/kubepods' > /dev/null && echo "stop.sh: kubepods cgroups left: $(echo /sys/fs/cgroup/*/kubepods)" >&2
  if [ -f "$NODE_RECORD/sysctls" ]; then
    local line
    while IFS= read -r line; do
      [ "$(sysctl -n "${line%%=*}" 2> /dev/null)" = "${line#*=}" ] || sysctl -qw "$line" > /dev/null || echo "stop.sh: could not restore $line" >&2
    done < "$NODE_RECORD/sysctls"
  fi
  if [ -f "$NODE_RECORD/absent-paths" ]; then
    local p
    while IFS= read -r p; do
      [ -e "$p" ] || continue
      if [ "$p" = /run/netns ]; then
        [ -n "$(ls -A /run/netns 2> /dev/null)" ] && continue # someone else's namespaces
        mountpoint -q /run/netns && umount /run/netns
        rmdir /run/netns 2> /dev/null
      elif ! grep -q " $p/" /proc/self/mountinfo; then
        rm -rf "$p"
      fi
    done < "$NODE_RECORD/absent-paths"
  fi
  if [ "$(cat "$NODE_RECORD/run-netns-was-mounted" 2> /dev/null)" = no ] && mountpoint -q /run/netns 2> /dev/null &&
    [ -z "$(ls -A /run/netns)" ]; then
    umount /run/netns
  fi
  # The node's runtime data (image layers, pod volumes); logs and config stay.
  if [ -d "$state/node" ] && ! grep -q " $state/node/" /proc/self/mountinfo; then
    rm -rf "$state/node/containerd" "$state/node/kubelet" "$state/node/runc" "$state/node/cni/ipam"
  fi
  rm -rf "$NODE_RECORD"
}
