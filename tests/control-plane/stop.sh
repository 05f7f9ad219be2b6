#!/usr/bin/env bash
# Stops a control plane started by start.sh STATE_DIR (each process's whole
# session: SIGTERM, then SIGKILL after 10 s).
set -uo pipefail
state="${1:?usage: stop.sh STATE_DIR}"
[ -d "$state/pids" ] || exit 0
order=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)
for name in "${order[@]}"; do
  f="$state/pids/$name"; [ -f "$f" ] || continue
  pid=$(cat "$f")
  kill -TERM -- "-$pid" 2> /dev/null || kill -TERM "$pid" 2> /dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.2; done
  kill -KILL -- "-$pid" 2> /dev/null || kill -KILL "$pid" 2> /dev/null
  rm -f "$f"
done
