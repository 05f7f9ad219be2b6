#!/usr/bin/env bash
# Makes a TCP port on the host's loopback (127.0.0.1:PORT) reachable from the
# pods of the real node of the plane at STATE_DIR, at NODE_IP:PORT: socat in
# the plane's network namespace listens there and forwards over a unix socket
# in STATE_DIR to socat on the host, which connects to 127.0.0.1:PORT (for a
# database or a fake service a test runs on the host). Prints NODE_IP:PORT.
# stop.sh stops both (pid files host-port-PORT-*).
#
#   host-port.sh STATE_DIR PORT
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${1:?usage: host-port.sh STATE_DIR PORT}"
port="${2:?usage: host-port.sh STATE_DIR PORT}"
case "$port" in '' | *[!0-9]*) echo "host-port.sh: PORT must be a number, got '$port'" >&2; exit 2 ;; esac
[ "$port" -ge 1 ] && [ "$port" -le 65535 ] || { echo "host-port.sh: PORT must be 1-65535, got $port" >&2; exit 2; }
state="$(cd "$state" && pwd -P)"
source "$here/node.sh"
[ -d "$state/node" ] && [ -e "/run/netns/$NODE_NETNS" ] || { echo "host-port.sh: no running real node at $state" >&2; exit 1; }
sock="$state/node/host-port-$port.sock"
launch() { # name, command...
  local name=$1; shift
  setsid "$@" > "$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/pids/$name"
}
if [ -f "$state/pids/host-port-$port-ns" ] && proc_running "$(cat "$state/pids/host-port-$port-ns")"; then
  echo "$NODE_IP:$port"
  exit 0
fi
launch "host-port-$port-host" socat "UNIX-LISTEN:$sock,fork,unlink-early" "TCP:127.0.0.1:$port"
launch "host-port-$port-ns" "${in_node_ns[@]}" socat "TCP-LISTEN:$port,bind=$NODE_IP,fork,reuseaddr" "UNIX-CONNECT:$sock"
for _ in $(seq 1 50); do
  if [ -S "$sock" ] && "${in_node_ns[@]}" ss -Hltn "sport = :$port" | grep -q .; then
    echo "$NODE_IP:$port"
    exit 0
  fi
  for n in host ns; do
    proc_running "$(cat "$state/pids/host-port-$port-$n")" || {
      echo "host-port.sh: socat ($n side) exited:" >&2
      cat "$state/logs/host-port-$port-$n.log" >&2
      exit 1
    }
  done
  sleep 0.1
done
echo "host-port.sh: the bridge for port $port did not come up within 5s" >&2
exit 1
