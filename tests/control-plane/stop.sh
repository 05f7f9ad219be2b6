#!/usr/bin/env bash
# Stops a control plane started by start.sh STATE_DIR (each process's whole
# session: SIGTERM, then SIGKILL after 5 s). With a real node (start.sh
# --real-node), first its agents, pods and containerd, and at the end puts
# back everything the node changed on the host (node.sh, node_clean):
# processes, mounts, pod network namespaces and the plane's, kubepods
# cgroups, sysctls, fixed paths. Idempotent.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${1:?usage: stop.sh STATE_DIR}"
[ -d "$state/pids" ] || exit 0
state="$(cd "$state" && pwd -P)"
source "$here/node.sh" # proc_running, and the real node's teardown

stop_one() { # name
  local f="$state/pids/$1" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill -TERM -- "-$pid" 2> /dev/null || kill -TERM "$pid" 2> /dev/null
  for _ in $(seq 1 50); do proc_running "$pid" || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2> /dev/null || kill -KILL "$pid" 2> /dev/null
  rm -f "$f"
}

real_node=false
[ -d "$state/node" ] && real_node=true
if $real_node; then
  for f in "$state"/pids/host-port-*; do [ -f "$f" ] && stop_one "$(basename "$f")"; done
  stop_one kube-proxy
  stop_one kubelet
  node_kill_pods # the pods and their shims (containerd would not stop them)
  stop_one containerd
fi
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop_one "$name"
done
for f in "$state"/pids/*; do [ -f "$f" ] && stop_one "$(basename "$f")"; done
if $real_node; then
  node_clean
fi
exit 0
