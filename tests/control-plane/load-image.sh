#!/usr/bin/env bash
# Loads image tarballs (docker or OCI archives, e.g. from oci-image.sh) into
# the containerd of the real node of the plane at STATE_DIR (start.sh
# --real-node), in the `k8s.io` namespace the kubelet uses. Pods then run them
# with `imagePullPolicy: Never` or `IfNotPresent` (the node has no registry).
#
#   load-image.sh STATE_DIR IMAGE.tar...
set -euo pipefail
state="${1:?usage: load-image.sh STATE_DIR IMAGE.tar...}"
shift
[ $# -gt 0 ] || { echo "usage: load-image.sh STATE_DIR IMAGE.tar..." >&2; exit 2; }
sock=$(sed -n 's/^export PAPERBOT_CONTAINERD_SOCKET=//p' "$state/env" 2> /dev/null || true)
[ -n "$sock" ] && [ -S "$sock" ] || {
  echo "load-image.sh: no running real node at $state (no PAPERBOT_CONTAINERD_SOCKET in $state/env, or its socket is gone)" >&2
  exit 1
}
for tar in "$@"; do
  [ -f "$tar" ] || { echo "load-image.sh: $tar is not a file" >&2; exit 1; }
  ctr --address "$sock" -n k8s.io images import "$tar"
done
