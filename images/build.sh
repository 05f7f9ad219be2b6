#!/usr/bin/env bash
# Builds paperbot's container images without a Docker engine.
#
# Output (docker-archive tarballs, each holding one linux/amd64 image under one
# tag; load with `ctr -n k8s.io images import <file>` or `docker load -i`):
#   target/images/paperbot-operator.tar  ghcr.io/paperbot/paperbot-operator:<version>
#   target/images/bot-runtime.tar        ghcr.io/paperbot/bot-runtime:<version>
#   target/images/pause.tar              registry.k8s.io/pause:<the kubelet's default tag>
# <version> is the workspace version (Cargo.toml [workspace.package]), which is
# also the chart's appVersion and the tag of the operator's default
# --runtime-image. The directory can be changed with PAPERBOT_IMAGE_DIR.
#
# The paperbot images hold: the static (musl) release binary at
# /usr/local/bin/<name> (the entrypoint), Debian's CA bundle at
# /etc/ssl/certs/ca-certificates.crt, and /etc/passwd and /etc/group with the
# user nonroot (65532) they run as (images/rootfs). No shell, nothing else.
# Labels: org.opencontainers.image.{title,description,source,version,revision,
# created,licenses}; revision is the git commit, created its commit time
# (or SOURCE_DATE_EPOCH). The Dockerfile at the repository root builds the same
# images with Docker or Buildah; tests/tests/images.rs checks both.
#
# The pause image is the kubelet's pod sandbox, built from
# build/pause/linux/pause.c of the pinned k8s.io/kubernetes module
# (tests/control-plane/versions.env) so that a test node needs no registry.
#
# Needs (installed by .ci/run): the Rust target x86_64-unknown-linux-musl,
# Debian's musl-tools (musl-gcc) and ca-certificates, Go, python3, GNU tar and
# gzip; crane comes from tests/control-plane/build.sh (or $CRANE).
#
# Cheap when nothing changed: cargo reports the binaries fresh, and an image
# whose inputs (binary, files, labels, this script) are unchanged is not
# assembled again. Builds in its own CARGO_TARGET_DIR (target/musl), so it can
# run from inside `cargo test`. Identical inputs give byte-identical tarballs.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
script="$repo/images/build.sh"
out="${PAPERBOT_IMAGE_DIR:-$repo/target/images}"
rust_target=x86_64-unknown-linux-musl
profile=image
ca_bundle=/etc/ssl/certs/ca-certificates.crt
registry_prefix=ghcr.io/paperbot
# The user every paperbot image runs as (images/rootfs/etc/passwd: nonroot).
image_user=65532:65532
# Cargo's own target dir: a nested cargo on the caller's target dir would wait
# forever for the lock that the calling `cargo test` holds.
export CARGO_TARGET_DIR="$repo/target/musl"
# Run from a test, the environment holds the calling crate's variables
# (CARGO_MANIFEST_DIR=.../tests, ...); build scripts that watch them (ring's)
# would make every run from a test rebuild. Drop what cargo sets for a crate.
for var in $(compgen -e); do
  case "$var" in
    CARGO_MANIFEST_* | CARGO_PKG_* | CARGO_CRATE_NAME | CARGO_BIN_NAME | CARGO_BIN_EXE_* | \
      CARGO_TARGET_TMPDIR | CARGO_PRIMARY_PACKAGE | CARGO_RUSTC_CURRENT_DIR | OUT_DIR)
      unset "$var" ;;
  esac
done

die() { echo "images/build.sh: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
t_start=$(now)

# ---- preflight: every missing tool named with its install step -------------
command -v cargo >/dev/null || die "cargo not found (the Rust toolchain)"
command -v musl-gcc >/dev/null || die "musl-gcc not found: apt-get install musl-tools (see .ci/run)"
python3 -c "import tomllib" 2>/dev/null || die "python3 (3.11 or later, for tomllib) not found: apt-get install python3"
command -v go >/dev/null || die "go not found: the pause image is built from the Kubernetes Go module"
tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar is needed (--sort=name for reproducible layers)"
[ -s "$ca_bundle" ] || die "$ca_bundle missing: apt-get install ca-certificates"
libdir="$(rustc --print target-libdir --target "$rust_target")"
compgen -G "$libdir/libstd-*.rlib" >/dev/null ||
  die "Rust target $rust_target not installed: rustup target add $rust_target"
crane="${CRANE:-}"
if [ -z "$crane" ]; then
  crane="$("$repo/tests/control-plane/build.sh" | tail -1)/bin/crane"
fi
[ -x "$crane" ] || die "crane not found at $crane (tests/control-plane/build.sh builds it)"
mkdir -p "$out"

# One build at a time per output directory (a test and a developer may race).
if command -v flock >/dev/null; then
  exec 9>"$out/.lock"
  flock 9
fi

# ---- version, revision, creation time -------------------------------------
# From the workspace's [workspace.package], which every crate inherits.
IFS=$'\t' read -r version license source_url < <(python3 -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    p = tomllib.load(f)["workspace"]["package"]
print(p["version"], p["license"], p["repository"], sep="\t")' "$repo/Cargo.toml")
[ -n "$source_url" ] || die "Cargo.toml [workspace.package] needs version, license and repository"
if git -C "$repo" rev-parse --verify -q HEAD >/dev/null 2>&1; then
  revision="$(git -C "$repo" rev-parse HEAD)"
  commit_time="$(git -C "$repo" log -1 --format=%ct HEAD)"
else
  revision=unknown
  commit_time=0
fi
epoch="${SOURCE_DATE_EPOCH:-$commit_time}"
[[ "$epoch" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be whole seconds since 1970, got '$epoch'"
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"

work="$(mktemp -d "${TMPDIR:-/tmp}/paperbot-images.XXXXXX")"
registry_pid=""
cleanup() {
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---- static binaries --------------------------------------------------------
t=$(now)
echo "== cargo build --profile $profile --target $rust_target (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
cargo build --locked --profile "$profile" --target "$rust_target" \
  -p paperbot-operator -p bot-runtime --bin paperbot-operator --bin bot-runtime \
  --manifest-path "$repo/Cargo.toml"
bin_dir="$CARGO_TARGET_DIR/$rust_target/$profile"
echo "   binaries ready in $(since "$t")" >&2

# ---- pause: the kubelet's default sandbox image, from the pinned module ----
# shellcheck source=tests/control-plane/versions.env source-path=SCRIPTDIR/..
source "$repo/tests/control-plane/versions.env"
k8s_dir="$(cd "$repo/tests/control-plane" &&
  GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
pause_src="$k8s_dir/build/pause/linux/pause.c"
[ -f "$pause_src" ] || die "$pause_src missing in the k8s.io/kubernetes $K8S_VERSION module"
pause_tag="$(sed -n 's/.*defaultPodSandboxImageVersion *= *"\([^"]*\)".*/\1/p' \
  "$k8s_dir/cmd/kubelet/app/options/container_runtime.go")"
[ -n "$pause_tag" ] || die "no defaultPodSandboxImageVersion in the kubelet $K8S_VERSION sources"
mkdir -p "$work/pause"
# The flags of build/pause/Makefile, with musl's static libc (smaller than glibc's).
musl-gcc -Os -Wall -Werror -static -s "-DVERSION=v$pause_tag-$K8S_VERSION" \
  -o "$work/pause/pause" "$pause_src"

# ---- layers -------------------------------------------------------------------
# A layer is a tar with fixed owners, modes, order and times (1970), so an
# unchanged file gives an unchanged layer digest across commits; it is gzip'd
# (without name or time) only when an image is assembled.
make_layer() { # <staging dir> <output .tar> <top-level entries...>
  local dir="$1" dest="$2"
  shift 2
  tar --sort=name --format=gnu --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -C "$dir" -cf "$dest" "$@"
}

# Shared base layer of both paperbot images: users and CA certificates.
base="$work/base"
mkdir -p "$base/etc/ssl/certs"
install -m 0644 "$repo/images/rootfs/etc/passwd" "$repo/images/rootfs/etc/group" "$base/etc/"
install -m 0644 "$ca_bundle" "$base/etc/ssl/certs/ca-certificates.crt"
chmod 0755 "$base/etc" "$base/etc/ssl" "$base/etc/ssl/certs"
make_layer "$base" "$work/base.tar" etc

# ---- image assembly ---------------------------------------------------------
# crane builds images only in a registry: an in-memory one on a free loopback
# port, started on first use, stopped on exit.
registry=""
start_registry() {
  [ -n "$registry" ] && return
  "$crane" registry serve --address 127.0.0.1:0 >"$work/registry.log" 2>&1 &
  registry_pid=$!
  local port=""
  for _ in $(seq 100); do
    port="$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/registry.log")"
    [ -n "$port" ] && break
    kill -0 "$registry_pid" 2>/dev/null || die "crane registry exited: $(cat "$work/registry.log")"
    sleep 0.1
  done
  [ -n "$port" ] || die "crane registry did not report its port: $(cat "$work/registry.log")"
  registry="127.0.0.1:$port"
}

# Writes the config fields crane does not set (created, history) and the
# platform, user, entrypoint and labels, from the environment.
edit_config() {
  python3 -c '
import json, os, sys
c = json.load(sys.stdin)
c["created"] = os.environ["IMG_CREATED"]
for h in c.get("history", []):
    h["created"] = os.environ["IMG_CREATED"]
c["os"], c["architecture"] = "linux", "amd64"
cfg = c.setdefault("config", {})
cfg["User"] = os.environ["IMG_USER"]
cfg["Entrypoint"] = [os.environ["IMG_ENTRYPOINT"]]
cfg["Labels"] = json.loads(os.environ["IMG_LABELS"])
json.dump(c, sys.stdout, separators=(",", ":"), sort_keys=True)'
}

sizes=()
human() { # bytes -> "6.6 MiB" / "14.0 KiB"
  awk -v b="$1" 'BEGIN { if (b >= 1048576) printf "%.1f MiB", b / 1048576; else printf "%.1f KiB", b / 1024 }'
}
# build_image <name> <tag> <user> <entrypoint> <labels json> <layer.tar...>
build_image() {
  local name="$1" tag="$2" user="$3" entrypoint="$4" labels="$5"
  shift 5
  local dest="$out/$name.tar" stamp="$out/.$name.inputs"
  local key
  key="$({
    printf '%s\n' "$tag" "$user" "$entrypoint" "$labels" "$created" "$crane"
    sha256sum "$script" "$@" | cut -d' ' -f1
  } | sha256sum | cut -d' ' -f1)"
  if [ -f "$dest" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then
    echo "== $name: unchanged ($dest)" >&2
  else
    local t
    t=$(now)
    start_registry
    local args=() layer
    for layer in "$@"; do
      [ -f "$layer.gz" ] || gzip -9n <"$layer" >"$layer.gz"
      args+=(-f "$layer.gz")
    done
    "$crane" append --oci-empty-base "${args[@]}" -t "$registry/$name:layers" >/dev/null 2>"$work/crane.log" ||
      die "crane append $name failed: $(cat "$work/crane.log")"
    "$crane" config "$registry/$name:layers" |
      IMG_CREATED="$created" IMG_USER="$user" IMG_ENTRYPOINT="$entrypoint" IMG_LABELS="$labels" edit_config |
      "$crane" edit config "$registry/$name:layers" -t "$registry/$name:final" >/dev/null 2>"$work/crane.log" ||
      die "crane edit config $name failed: $(cat "$work/crane.log")"
    rm -f "$dest.tmp"
    "$crane" mutate "$registry/$name:final" -t "$tag" -o "$dest.tmp" >/dev/null 2>"$work/crane.log" ||
      die "crane mutate $name failed: $(cat "$work/crane.log")"
    mv -f "$dest.tmp" "$dest"
    echo "$key" >"$stamp"
    echo "== $name: assembled in $(since "$t")" >&2
  fi
  # Compressed: the layers as stored in the tarball (and a registry);
  # uncompressed: the layers' tar streams, what the runtime unpacks.
  local packed unpacked=0 layer
  packed="$(tar -tvf "$dest" | awk '$NF ~ /\.tar\.gz$/ { s += $3 } END { print s + 0 }')"
  for layer in "$@"; do unpacked=$((unpacked + $(stat -c %s "$layer"))); done
  sizes+=("$(printf '%-18s %-42s %10s compressed %10s uncompressed  %s' "$name" "$tag" \
    "$(human "$packed")" "$(human "$unpacked")" "$dest")")
}

labels_json() { # <title> <description> <version> <source> <license> <revision>
  python3 -c '
import json, sys
t, d, v, s, l, r, c = sys.argv[1:]
print(json.dumps({
    "org.opencontainers.image.title": t,
    "org.opencontainers.image.description": d,
    "org.opencontainers.image.version": v,
    "org.opencontainers.image.source": s,
    "org.opencontainers.image.licenses": l,
    "org.opencontainers.image.revision": r,
    "org.opencontainers.image.created": c,
}, sort_keys=True))' "$@" "$created"
}

declare -A description=(
  [paperbot-operator]="paperbot operator: reconciles PaperAccount, StrategyConfig and BotSession resources into bot-runtime pods"
  [bot-runtime]="paperbot bot runtime: runs one paper-trading session and serves its status, metrics and ledger API"
)
for name in paperbot-operator bot-runtime; do
  staging="$work/$name"
  mkdir -p "$staging/usr/local/bin"
  install -m 0755 "$bin_dir/$name" "$staging/usr/local/bin/$name"
  chmod 0755 "$staging/usr" "$staging/usr/local" "$staging/usr/local/bin"
  make_layer "$staging" "$work/$name.tar" usr
  build_image "$name" "$registry_prefix/$name:$version" "$image_user" "/usr/local/bin/$name" \
    "$(labels_json "$name" "${description[$name]}" "$version" "$source_url" "$license" "$revision")" \
    "$work/base.tar" "$work/$name.tar"
done

chmod 0755 "$work/pause"
make_layer "$work/pause" "$work/pause.tar" pause
# Upstream's pause image runs as 65535:65535 with /pause as its entrypoint.
build_image pause "registry.k8s.io/pause:$pause_tag" 65535:65535 /pause \
  "$(labels_json pause "Kubernetes pod sandbox (pause) from k8s.io/kubernetes $K8S_VERSION build/pause/linux/pause.c" \
    "$pause_tag" https://github.com/kubernetes/kubernetes Apache-2.0 "$K8S_VERSION")" \
  "$work/pause.tar"

printf '%s\n' "${sizes[@]}"
echo "images/build.sh: done in $(since "$t_start")" >&2
