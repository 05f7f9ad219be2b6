#!/usr/bin/env bash
# Assembles a single-layer OCI image from files, without a Docker engine, as a
# tarball that `ctr images import` (containerd) and `docker load` accept.
#
#   oci-image.sh NAME:TAG -o OUT.tar [options] SRC[:DEST]...
#
#   SRC[:DEST]          a file is copied to DEST (default /<basename of SRC>);
#                       a directory's contents are copied under DEST (default /).
#                       Modes and symbolic links are kept; owners become 0:0.
#   --entrypoint ARG    entrypoint word (repeat for more words; no commas)
#   --cmd ARG           default argument (repeat; no commas)
#   --user USER         user (e.g. 65532 or 65532:65532)
#   --workdir DIR       working directory
#   --env KEY=VALUE     environment variable (repeat)
#   --label KEY=VALUE   config label, e.g. org.opencontainers.image.source=... (repeat)
#   --platform OS/ARCH  default linux/<this machine's architecture>
#
# How: the files become one layer tarball (sorted, owners 0:0, mtime 0, so the
# same inputs give the same layer); `crane append --oci-empty-base` pushes it
# to an in-memory registry that `crane registry serve` runs on loopback for
# the duration of the script, and `crane mutate` sets the platform and config
# and writes the tarball tagged NAME:TAG. (An image written by `crane append
# -o` directly has an empty os/architecture, which containerd does not match.)
# crane comes from the control-plane build cache (build.sh).
set -euo pipefail
umask 022
here="$(cd "$(dirname "$0")" && pwd)"
usage() { echo "usage: oci-image.sh NAME:TAG -o OUT.tar [--entrypoint ARG]... [--cmd ARG]... [--user U] [--workdir D] [--env K=V]... [--label K=V]... [--platform OS/ARCH] SRC[:DEST]..." >&2; exit 2; }
[ $# -ge 1 ] || usage
image=$1; shift
case "$image" in *:*) ;; *) echo "oci-image.sh: image $image has no tag (expected NAME:TAG)" >&2; exit 2 ;; esac
out="" user="" workdir=""
case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
platform="linux/$arch"
mutate=() files=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=${2:?-o needs a path}; shift 2 ;;
    --entrypoint|--cmd)
      case "${2:?$1 needs a value}" in *,*) echo "oci-image.sh: $1 '$2' contains a comma (crane splits on commas)" >&2; exit 2 ;; esac
      mutate+=("$1" "$2"); shift 2 ;;
    --user) user=${2:?--user needs a value}; shift 2 ;;
    --workdir) workdir=${2:?--workdir needs a value}; shift 2 ;;
    --env) mutate+=(--env "${2:?--env needs KEY=VALUE}"); shift 2 ;;
    --label) mutate+=(--label "${2:?--label needs KEY=VALUE}"); shift 2 ;;
    --platform) platform=${2:?--platform needs OS/ARCH}; shift 2 ;;
    -*) echo "oci-image.sh: unknown option $1" >&2; usage ;;
    *) files+=("$1"); shift ;;
  esac
done
[ -n "$out" ] || { echo "oci-image.sh: -o OUT.tar is required" >&2; usage; }
[ ${#files[@]} -gt 0 ] || { echo "oci-image.sh: no files given" >&2; usage; }
[ -n "$user" ] && mutate+=(--user "$user")
[ -n "$workdir" ] && mutate+=(--workdir "$workdir")
crane="$("$here/build.sh" 2> /dev/null)/bin/crane" || { echo "oci-image.sh: no crane: tests/control-plane/build.sh failed" >&2; exit 1; }

work=$(mktemp -d -t paperbot-oci-image.XXXXXX)
reg_pid=""
cleanup() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2> /dev/null; wait "$reg_pid" 2> /dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
root="$work/root"
mkdir -p "$root"
chmod 755 "$root"
for spec in "${files[@]}"; do
  src=${spec%%:*}
  if [ "$src" = "$spec" ]; then dest=""; else dest=${spec#*:}; fi
  [ -e "$src" ] || { echo "oci-image.sh: $src does not exist" >&2; exit 1; }
  if [ -d "$src" ]; then
    mkdir -p "$root/${dest#/}"
    cp -a "$src/." "$root/${dest#/}/"
  else
    [ -n "$dest" ] || dest="/$(basename "$src")"
    case "$dest" in */) dest="$dest$(basename "$src")" ;; esac
    mkdir -p "$(dirname "$root/${dest#/}")"
    cp -a "$src" "$root/${dest#/}"
  fi
done
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/layer.tar" .

"$crane" registry serve --address 127.0.0.1:0 > "$work/registry.log" 2>&1 &
reg_pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/registry.log")
  [ -n "$port" ] && break
  kill -0 "$reg_pid" 2> /dev/null || break
  sleep 0.1
done
[ -n "$port" ] || { echo "oci-image.sh: crane registry did not start:" >&2; cat "$work/registry.log" >&2; exit 1; }
staged="127.0.0.1:$port/image:staged"
crane_log() { # command... → runs crane quietly; its output is shown when it fails
  "$crane" "$@" > "$work/crane.log" 2>&1 || { echo "oci-image.sh: crane $1 failed:" >&2; cat "$work/crane.log" >&2; exit 1; }
}
crane_log append --oci-empty-base -f "$work/layer.tar" -t "$staged"
mkdir -p "$(dirname "$out")"
crane_log mutate "$staged" --set-platform "$platform" "${mutate[@]}" -t "$image" -o "$out"
echo "$image: $(du -k "$out" | cut -f1) KiB in $out" >&2
