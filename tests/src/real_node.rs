//! A control plane with one real node, for tests that need real pods: the
//! plane of [`crate::control_plane`] plus containerd, a kubelet, kube-proxy
//! and CoreDNS, all in a private network namespace
//! (`tests/control-plane/start.sh STATE --real-node`, see `node.sh` there).
//! The host reaches the API server through a loopback port, so
//! [`ControlPlane`]'s `kubectl`, `helm` and kube clients work unchanged. The
//! kwok fake nodes are there too; the real node carries the taint
//! [`REAL_NODE_TAINT`] and the label [`REAL_NODE_LABEL`], so only pods that
//! ask for it ([`POD_PLACEMENT_YAML`], [`placement_values_yaml`],
//! [`toleration`] and [`node_selector`]) run there.
//!
//! Starting needs root; one real-node plane runs per machine at a time, so a
//! test binary serializes its tests that start one. It is separate from the
//! shared kwok-only plane, which stays as fast as before.

use std::{
    collections::BTreeMap,
    ops::Deref,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{ControlPlane, repo};

/// Name of the real node.
pub const REAL_NODE_NAME: &str = "paperbot-node";
/// Key of the real node's taint and label.
pub const REAL_NODE_KEY: &str = "paperbot.io/real-node";
/// The real node's taint (`key=value:effect`); pods tolerate it to run there.
pub const REAL_NODE_TAINT: &str = "paperbot.io/real-node=true:NoSchedule";
/// The real node's label (`key=value`); pods select it to run there.
pub const REAL_NODE_LABEL: &str = "paperbot.io/real-node=true";
/// Network namespace holding the plane, the node and its bridge.
pub const REAL_NODE_NETNS: &str = "paperbot-node";
/// ClusterIP of the cluster DNS Service `kube-system/kube-dns` (CoreDNS).
pub const CLUSTER_DNS_IP: &str = "10.96.0.10";
/// The pods' address range on the real node.
pub const POD_CIDR: &str = "10.244.0.0/24";

/// The part of a pod spec that places it on the real node: a `nodeSelector`
/// and a toleration, as YAML at the indentation of `spec:`'s fields (two
/// spaces). Paste it under a Pod's `spec:`; indent it further for a
/// template's `spec:`.
pub const POD_PLACEMENT_YAML: &str = "  nodeSelector: {paperbot.io/real-node: \"true\"}\n  tolerations:\n  - {key: paperbot.io/real-node, operator: Exists, effect: NoSchedule}\n";

/// Helm values that place a chart's pods on the real node, for charts with
/// the usual top-level `nodeSelector` and `tolerations` values.
pub fn placement_values_yaml() -> String {
    format!(
        "nodeSelector:\n  {REAL_NODE_KEY}: \"true\"\ntolerations:\n- key: {REAL_NODE_KEY}\n  operator: Exists\n  effect: NoSchedule\n"
    )
}

/// The toleration of the real node's taint.
pub fn toleration() -> k8s_openapi::api::core::v1::Toleration {
    k8s_openapi::api::core::v1::Toleration {
        key: Some(REAL_NODE_KEY.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some("NoSchedule".to_string()),
        ..Default::default()
    }
}

/// The node selector of the real node.
pub fn node_selector() -> BTreeMap<String, String> {
    BTreeMap::from([(REAL_NODE_KEY.to_string(), "true".to_string())])
}

/// A control plane with one real node, stopped (completely: processes,
/// mounts, network namespaces, cgroups, sysctls, fixed paths) by
/// [`Self::stop`] or when dropped.
#[derive(Debug)]
pub struct RealNodePlane {
    /// The plane (host kubeconfig, binaries, audit log, state directory).
    pub plane: ControlPlane,
    /// State directory (certificates, logs, the node's runtime data).
    pub state: PathBuf,
    /// Name of the real node ([`REAL_NODE_NAME`]).
    pub node: String,
    /// The node's IP in the plane's network namespace: the kubelet's
    /// InternalIP, and where pods reach host ports exposed with
    /// [`Self::expose_host_port`].
    pub node_ip: String,
    /// containerd's socket (under `state`).
    pub containerd_socket: PathBuf,
    /// A busybox image (Debian's busybox-static, every applet linked in
    /// `/bin`, entrypoint `/bin/sh`) loaded on the node; use it with
    /// `imagePullPolicy: Never`.
    pub busybox_image: String,
    /// How long `start.sh --real-node` took (wall clock; the first start on a
    /// machine also assembles the node's images).
    pub started_in: Duration,
    stopped: AtomicBool,
}

impl Deref for RealNodePlane {
    type Target = ControlPlane;
    fn deref(&self) -> &ControlPlane {
        &self.plane
    }
}

static SHARED: OnceLock<RealNodePlane> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(p) = SHARED.get() {
        p.stop();
    }
}

/// The process's shared real-node plane, started on first use and stopped
/// when the process exits. Tests in one binary share it (each in its own
/// namespace); a test that stops a plane must start its own with
/// [`RealNodePlane::start`] instead.
///
/// # Panics
/// When the plane cannot start (not root, a tool missing, another real-node
/// plane running): the message carries start.sh's output and the
/// components' logs.
pub fn real_node_plane() -> &'static RealNodePlane {
    SHARED.get_or_init(|| {
        let plane = RealNodePlane::start();
        // SAFETY: registering a plain extern "C" function with atexit.
        unsafe { libc::atexit(stop_shared) };
        plane
    })
}

impl RealNodePlane {
    /// Start a plane with a real node in a fresh state directory
    /// (`target/control-plane/node-<pid>-<n>`) and wait until the node is
    /// Ready, kube-proxy serves and CoreDNS is ready.
    ///
    /// # Panics
    /// When start.sh fails (it then stops what it started): the message
    /// carries its output, including the last lines of every component's log.
    pub fn start() -> Self {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, Ordering::SeqCst);
        let state = repo().join(format!(
            "target/control-plane/node-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&state);
        let began = Instant::now();
        let out = Command::new(repo().join("tests/control-plane/start.sh"))
            .arg(&state)
            .arg("--real-node")
            .output()
            .expect("running tests/control-plane/start.sh");
        let started_in = began.elapsed();
        assert!(
            out.status.success(),
            "the control plane with a real node failed to start (tests/control-plane/start.sh --real-node):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout).into_owned();
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("start.sh did not print {name}:\n{env}"))
        };
        let state = state.canonicalize().unwrap_or(state);
        RealNodePlane {
            plane: ControlPlane {
                kubeconfig: var("KUBECONFIG").into(),
                bin: var("PAPERBOT_CP_BIN").into(),
                audit_log: Some(var("PAPERBOT_CP_AUDIT_LOG").into()),
                state: Some(state.clone()),
            },
            state,
            node: var("PAPERBOT_NODE_NAME"),
            node_ip: var("PAPERBOT_NODE_IP"),
            containerd_socket: var("PAPERBOT_CONTAINERD_SOCKET").into(),
            busybox_image: var("PAPERBOT_BUSYBOX_IMAGE"),
            started_in,
            stopped: AtomicBool::new(false),
        }
    }

    /// Stop everything (`stop.sh`) and delete etcd's data; idempotent.
    /// Returns what stop.sh
    /// reported on stderr: empty when everything was put back, else a line
    /// per leftover (`stop.sh: mounts left: ...`).
    pub fn stop(&self) -> String {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return String::new();
        }
        let report = match Command::new(repo().join("tests/control-plane/stop.sh"))
            .arg(&self.state)
            .output()
        {
            Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
            Err(e) => format!("running tests/control-plane/stop.sh: {e}"),
        };
        // etcd's preallocated WAL is most of the state directory (about
        // 60 MB); the logs and configuration stay for reading.
        let _ = std::fs::remove_dir_all(self.state.join("etcd"));
        report
    }

    /// Load an image tarball (docker or OCI archive, e.g. from
    /// [`oci_image`] or `images/build.sh`) into the node's containerd
    /// (`ctr -n k8s.io images import`). Pods use it with `imagePullPolicy:
    /// Never` or `IfNotPresent`.
    ///
    /// # Panics
    /// When the import fails, with ctr's output.
    pub fn load_image(&self, tar: &Path) {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.containerd_socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(tar)
            .output()
            .expect("running ctr (Debian: containerd)");
        assert!(
            out.status.success(),
            "ctr images import {} failed:\n{}{}",
            tar.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Make the host's `127.0.0.1:port` reachable from the node's pods;
    /// returns the `host:port` they connect to (`<node IP>:port`). The bridge
    /// (`tests/control-plane/host-port.sh`) stops with the plane.
    ///
    /// # Panics
    /// When the bridge does not come up, with the script's output.
    pub fn expose_host_port(&self, port: u16) -> String {
        let out = Command::new(repo().join("tests/control-plane/host-port.sh"))
            .arg(&self.state)
            .arg(port.to_string())
            .output()
            .expect("running tests/control-plane/host-port.sh");
        assert!(
            out.status.success(),
            "host-port.sh {port} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A command that runs `program` in the plane's network namespace, where
    /// pod IPs and ClusterIPs are routable (e.g. `curl` a pod from the node).
    pub fn in_netns(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{REAL_NODE_NETNS}"))
            .arg("--")
            .arg(program);
        c
    }

    /// Create a fresh namespace (`<name>-<pid>`) whose PodSecurity admission
    /// enforces (and warns and audits at) the `restricted` level.
    pub fn restricted_namespace(&self, name: &str) -> String {
        let ns = format!("{name}-{}", std::process::id());
        self.kubectl_stdin_ok(
            &["create", "-f", "-"],
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    \
                 pod-security.kubernetes.io/enforce: restricted\n    \
                 pod-security.kubernetes.io/warn: restricted\n    \
                 pod-security.kubernetes.io/audit: restricted\n"
            ),
        );
        ns
    }

    /// Process id of a component (`kubelet`, `containerd`, `kube-proxy`,
    /// `kube-apiserver`, ...) from the state directory, while it runs.
    pub fn component_pid(&self, name: &str) -> Option<u32> {
        std::fs::read_to_string(self.state.join("pids").join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// What this plane left on the host after [`Self::stop`], compared with
    /// `before` (taken before it started): processes naming the state
    /// directory, the network namespace, mounts under the state directory or
    /// the kubelet's and containerd's fixed directories, pod network
    /// namespaces, `kubepods` cgroups, changed host sysctls, and fixed paths
    /// that did not exist before. Empty when everything was put back.
    pub fn leftovers(&self, before: &HostState) -> Vec<String> {
        let now = HostState::capture();
        let state = self.state.to_string_lossy().into_owned();
        let mut left = Vec::new();
        for (pid, cmdline) in processes() {
            if cmdline.contains(&state) {
                left.push(format!("process {pid}: {cmdline}"));
            }
        }
        if now.netns.iter().any(|n| n == REAL_NODE_NETNS) {
            left.push(format!("network namespace {REAL_NODE_NETNS}"));
        }
        for n in now.netns.iter().filter(|n| !before.netns.contains(n)) {
            left.push(format!("network namespace {n}"));
        }
        for m in now.mounts.iter().filter(|m| !before.mounts.contains(m)) {
            if m.starts_with(&state)
                || m.starts_with("/var/lib/kubelet")
                || m.starts_with("/run/containerd")
                || m.starts_with("/run/netns")
            {
                left.push(format!("mount {m}"));
            }
        }
        for c in now.kubepods_cgroups.iter() {
            left.push(format!("cgroup {c}"));
        }
        for ((name, was), (_, is)) in before.sysctls.iter().zip(now.sysctls.iter()) {
            if was != is {
                left.push(format!("sysctl {name} = {is} (was {was})"));
            }
        }
        for (path, existed) in before.fixed_paths.iter() {
            if !existed && Path::new(path).exists() {
                left.push(format!("path {path}"));
            }
        }
        left
    }
}

impl Drop for RealNodePlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a real node may change on the host, captured before it starts and
/// compared after it stops ([`RealNodePlane::leftovers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostState {
    /// Host sysctls the kubelet sets, `(name, value)`.
    pub sysctls: Vec<(String, String)>,
    /// Fixed paths containerd, the kubelet and the CNI plugins write,
    /// `(path, exists)`.
    pub fixed_paths: Vec<(String, bool)>,
    /// Named network namespaces (`/run/netns`).
    pub netns: Vec<String>,
    /// Mount points (from `/proc/self/mountinfo`).
    pub mounts: Vec<String>,
    /// `kubepods` cgroup directories under `/sys/fs/cgroup`.
    pub kubepods_cgroups: Vec<String>,
}

/// The sysctls [`HostState`] watches (the kubelet sets these on start).
pub const HOST_SYSCTLS: [&str; 6] = [
    "kernel/panic",
    "kernel/panic_on_oops",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// The fixed paths [`HostState`] watches.
pub const FIXED_PATHS: [&str; 10] = [
    "/run/containerd",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/opt/containerd",
    "/run/paperbot-node",
];

impl HostState {
    /// Read the host's current state.
    pub fn capture() -> Self {
        let sysctls = HOST_SYSCTLS
            .iter()
            .map(|s| {
                let v = std::fs::read_to_string(format!("/proc/sys/{s}"))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_else(|e| format!("<unreadable: {e}>"));
                (s.replace('/', "."), v)
            })
            .collect();
        let fixed_paths = FIXED_PATHS
            .iter()
            .map(|p| (p.to_string(), Path::new(p).exists()))
            .collect();
        let mut netns: Vec<String> = std::fs::read_dir("/run/netns")
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        netns.sort();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .collect();
        // cgroup v1 (one hierarchy per controller) and v2 (the root).
        let mut kubepods_cgroups: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| {
                d.flatten()
                    .map(|e| e.path().join("kubepods"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/sys/fs/cgroup/kubepods")])
            .filter(|p| p.is_dir())
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        kubepods_cgroups.dedup();
        HostState {
            sysctls,
            fixed_paths,
            netns,
            mounts,
            kubepods_cgroups,
        }
    }
}

/// Every process as `(pid, command line with spaces)`.
fn processes() -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            Some((pid, cmd.trim().to_string()))
        })
        .filter(|(_, c)| !c.is_empty())
        .collect()
}

/// Assemble a single-layer image tarball with `tests/control-plane/oci-image.sh`
/// (crane, no Docker engine): `image` is `NAME:TAG`, `args` the script's
/// options and `SRC[:DEST]` files (see the script). Returns `out`.
///
/// # Panics
/// When the script fails, with its output.
pub fn oci_image(image: &str, out: &Path, args: &[&str]) -> PathBuf {
    let res = Command::new(repo().join("tests/control-plane/oci-image.sh"))
        .arg(image)
        .arg("-o")
        .arg(out)
        .args(args)
        .output()
        .expect("running tests/control-plane/oci-image.sh");
    assert!(
        res.status.success(),
        "oci-image.sh {image} failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    out.to_path_buf()
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
