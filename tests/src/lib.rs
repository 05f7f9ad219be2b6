//! Shared fixtures of the end-to-end tests: one real Kubernetes control plane
//! per test process (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok, built from source by `tests/control-plane/`),
//! plus helpers to run `kubectl` and `helm` against it and read its audit log,
//! and to give runtime pods the PersistentVolumes their ledger claims bind to.
//!
//! The plane starts on first use (building its binaries once; later runs
//! reuse the cache) and stops when the test process exits. If it cannot
//! start, the test fails with the plane's logs — it never skips. To use a
//! plane started by hand instead, set `PAPERBOT_TEST_KUBECONFIG` and
//! `PAPERBOT_CP_BIN` (the directory holding kubectl and helm).
//!
//! Tests that need real pods use [`real_node_plane`] or
//! [`RealNodePlane::start`] instead: the same plane plus one real node
//! (containerd, kubelet, kube-proxy, CoreDNS; see [`real_node`]).

pub mod chart_values;
pub mod fake_runtime;
pub mod real_node;
pub mod scale;

pub use real_node::{RealNodePlane, real_node_plane};

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    /// Admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// Directory with kubectl, helm and the other binaries.
    pub bin: PathBuf,
    /// The API server's JSON-lines audit log (one event per request).
    pub audit_log: Option<PathBuf>,
    /// State directory (certificates, logs) when this process started the plane.
    pub state: Option<PathBuf>,
}

/// Root of the repository.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

static PLANE: OnceLock<ControlPlane> = OnceLock::new();

extern "C" fn stop_plane() {
    if let Some(state) = PLANE.get().and_then(|p| p.state.as_ref()) {
        let _ = Command::new(repo().join("tests/control-plane/stop.sh"))
            .arg(state)
            .status();
    }
}

/// The control plane, started on first use.
///
/// # Panics
/// When the plane cannot be built or started: the panic message carries the
/// script's output, including the last lines of every component's log.
pub fn control_plane() -> &'static ControlPlane {
    PLANE.get_or_init(|| {
        if let Ok(kc) = std::env::var("PAPERBOT_TEST_KUBECONFIG") {
            let bin = std::env::var("PAPERBOT_CP_BIN")
                .expect("PAPERBOT_CP_BIN with PAPERBOT_TEST_KUBECONFIG");
            return ControlPlane {
                kubeconfig: kc.into(),
                bin: bin.into(),
                audit_log: std::env::var("PAPERBOT_CP_AUDIT_LOG").ok().map(Into::into),
                state: None,
            };
        }
        let state = repo().join(format!("target/control-plane/run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let out = Command::new(repo().join("tests/control-plane/start.sh"))
            .arg(&state)
            .output()
            .expect("running tests/control-plane/start.sh");
        // Stop the plane when the test process exits, whatever happens.
        // SAFETY: registering a plain extern "C" function with atexit.
        unsafe { libc::atexit(stop_plane) };
        assert!(
            out.status.success(),
            "the Kubernetes control plane failed to start (tests/control-plane/start.sh):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout).to_string();
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("start.sh did not print {name}:\n{env}"))
        };
        ControlPlane {
            kubeconfig: var("KUBECONFIG"),
            bin: var("PAPERBOT_CP_BIN"),
            audit_log: Some(var("PAPERBOT_CP_AUDIT_LOG")),
            state: Some(state),
        }
    })
}

impl ControlPlane {
    /// `kubectl ARGS` against the plane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// `kubectl ARGS` with `stdin`.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// `kubectl ARGS`, panicking with its output unless it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `helm ARGS` against the plane.
    pub fn helm(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("helm"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("helm runs")
    }

    /// A kube client with the admin credentials.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kube config");
        kube::Client::try_from(cfg).expect("client")
    }

    /// Kubeconfig of one of the extra identities minted by `start.sh`
    /// (`operator-a`, `operator-b`), for telling writers apart in the audit log.
    pub fn kubeconfig_for(&self, user: &str) -> PathBuf {
        let dir = self.kubeconfig.parent().expect("kubeconfig directory");
        let p = dir.join(format!("{user}.kubeconfig"));
        assert!(p.is_file(), "no kubeconfig for {user} at {}", p.display());
        p
    }

    /// A kube client authenticated as `user` (see [`Self::kubeconfig_for`]).
    pub async fn client_for(&self, user: &str) -> kube::Client {
        let kc =
            kube::config::Kubeconfig::read_from(self.kubeconfig_for(user)).expect("kubeconfig");
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kube config");
        kube::Client::try_from(cfg).expect("client")
    }

    /// The audit log files, oldest first: the API server rotates
    /// `audit.jsonl` at 100 MB into `audit-<time>.jsonl` beside it, so a
    /// count over the current file alone misses the older requests.
    pub fn audit_files(&self) -> Vec<PathBuf> {
        let log = self
            .audit_log
            .as_ref()
            .expect("this plane has an audit log");
        let dir = log.parent().expect("audit log directory");
        let stem = log
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("audit")
            .to_string();
        let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("audit log directory readable")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p != log
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{stem}-")))
            })
            .collect();
        // Rotated names carry their rotation time (`audit-2026-01-01T10-00-00.000.jsonl`).
        rotated.sort();
        rotated.push(log.clone());
        rotated
    }

    /// Every request the API server audited for `user` (complete responses
    /// only, one per request), oldest first, across rotated files.
    pub fn audit_events(&self, user: &str) -> Vec<AuditEvent> {
        use std::io::BufRead;
        let needle = format!("\"username\":\"{user}\"");
        let mut events = Vec::new();
        for file in self.audit_files() {
            let Ok(f) = std::fs::File::open(&file) else {
                continue; // rotated away between listing and opening
            };
            for line in std::io::BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                if !line.contains(&needle) {
                    continue;
                }
                if let Some(e) = AuditEvent::parse(&line, user) {
                    events.push(e);
                }
            }
        }
        events
    }

    /// Write requests (create, update, patch, delete) the API server audited
    /// for `user`, as `verb resource[/subresource] namespace/name`, in order.
    pub fn audited_writes(&self, user: &str) -> Vec<String> {
        self.audit_events(user)
            .into_iter()
            .filter(AuditEvent::is_write)
            .map(|e| e.to_string())
            .collect()
    }

    /// [`Self::audited_writes`] of `user` in namespace `ns` only.
    pub fn audited_writes_in(&self, user: &str, ns: &str) -> Vec<String> {
        self.audit_events(user)
            .into_iter()
            .filter(|e| e.is_write() && e.namespace == ns)
            .map(|e| e.to_string())
            .collect()
    }

    /// The operator's identity `name`, as the Helm chart makes it: the
    /// chart's ServiceAccount, ClusterRole and bindings (release `name` in
    /// namespace [`OPERATOR_NAMESPACE`], rendered by `helm template` and
    /// applied), and a kubeconfig with a token of that ServiceAccount. The
    /// operator under test runs with it, so the API server authorizes it by
    /// the chart's RBAC and API Priority and Fairness throttles it like a
    /// real workload (`system:masters`, the admin's group, is exempt from
    /// both). Made once per process and name.
    pub fn operator_identity(&self, name: &str) -> Identity {
        self.chart_identity(name, &[])
    }

    /// The operator's identity `name` in the chart's namespaced mode
    /// (`watchNamespaces`): a Role and RoleBinding in each of `namespaces`
    /// (which must exist) and the leader Role in [`OPERATOR_NAMESPACE`],
    /// nothing cluster-wide. Made once per process and name; `name` must
    /// differ from the names given to [`Self::operator_identity`].
    pub fn namespaced_operator_identity(&self, name: &str, namespaces: &[&str]) -> Identity {
        self.chart_identity(
            name,
            &[format!("watchNamespaces={{{}}}", namespaces.join(","))],
        )
    }

    /// The identity of release `name` rendered with `--set` values `sets`,
    /// made once per process and name.
    fn chart_identity(&self, name: &str, sets: &[String]) -> Identity {
        static IDENTITIES: std::sync::Mutex<Vec<Identity>> = std::sync::Mutex::new(Vec::new());
        let mut made = IDENTITIES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = made.iter().find(|i| i.name == name) {
            return id.clone();
        }
        let id = self.make_operator_identity(name, sets);
        made.push(id.clone());
        id
    }

    fn make_operator_identity(&self, name: &str, sets: &[String]) -> Identity {
        let ns = OPERATOR_NAMESPACE;
        self.kubectl_stdin_ok(
            &["apply", "--server-side", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
        );
        let chart = repo().join("charts/paperbot");
        let mut args = vec![
            "template",
            name,
            chart.to_str().expect("utf-8 path"),
            "--namespace",
            ns,
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ];
        for set in sets {
            args.extend(["--set", set.as_str()]);
        }
        let out = self.helm(&args);
        assert!(
            out.status.success(),
            "helm template failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8_lossy(&out.stdout).into_owned();
        // Every object names its namespace (the Roles of namespaced mode are
        // in the watched namespaces, not the release's).
        self.kubectl_stdin_ok(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            &rendered,
        );
        let account = rendered
            .split("---")
            .find(|doc| doc.contains("kind: ServiceAccount"))
            .and_then(|doc| {
                doc.lines()
                    .skip_while(|l| !l.starts_with("metadata:"))
                    .find_map(|l| l.trim().strip_prefix("name: "))
            })
            .unwrap_or_else(|| panic!("no ServiceAccount in the chart's output:\n{rendered}"))
            .trim()
            .to_string();
        let token = self
            .kubectl_ok(&["create", "token", &account, "-n", ns, "--duration", "48h"])
            .trim()
            .to_string();
        let kc = std::fs::read_to_string(&self.kubeconfig).expect("admin kubeconfig readable");
        let doc: serde_yaml::Value = serde_yaml::from_str(&kc).expect("admin kubeconfig is YAML");
        let cluster = &doc["clusters"][0]["cluster"];
        let server = cluster["server"].as_str().expect("server in kubeconfig");
        let ca = cluster["certificate-authority"]
            .as_str()
            .expect("certificate-authority in kubeconfig");
        let path = self
            .kubeconfig
            .parent()
            .expect("kubeconfig directory")
            .join(format!("sa-{name}.kubeconfig"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}\n\
                 users:\n- name: {name}\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: {name}, namespace: default}}\n\
                 current-context: test\n"
            ),
        )
        .expect("writing the ServiceAccount kubeconfig");
        Identity {
            name: name.to_string(),
            username: format!("system:serviceaccount:{ns}:{account}"),
            namespace: ns.to_string(),
            kubeconfig: path,
        }
    }

    /// Install (or update) the CRDs from `crds/manifests` and wait until they
    /// are established.
    pub fn install_crds(&self) {
        let dir = repo().join("crds/manifests");
        self.kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            dir.to_str().unwrap(),
        ]);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/paperaccounts.paperbot.io",
            "crd/strategyconfigs.paperbot.io",
            "crd/botsessions.paperbot.io",
        ]);
    }

    /// Create a fresh namespace for one test (`<name>-<pid>`, so reruns against
    /// a long-lived plane never meet a namespace still terminating).
    pub fn namespace(&self, name: &str) -> String {
        let ns = format!("{name}-{}", std::process::id());
        self.kubectl_ok(&["create", "namespace", &ns]);
        ns
    }

    /// The StorageClass of the tests' ledger volumes, [`LEDGER_STORAGE_CLASS`]:
    /// no provisioner (the plane has none; tests create the PersistentVolumes
    /// with [`Self::provision_ledger_volume`]) and immediate binding, so the
    /// persistent-volume controller of kube-controller-manager binds a claim
    /// as soon as its volume exists. Created once; idempotent.
    pub fn ledger_storage_class(&self) -> &'static str {
        self.kubectl_stdin_ok(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {LEDGER_STORAGE_CLASS}}}\n\
                 provisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: Immediate\nreclaimPolicy: Retain\n"
            ),
        );
        LEDGER_STORAGE_CLASS
    }

    /// Create the PersistentVolume a ledger claim `claim` in `ns` binds to:
    /// `size`, ReadWriteOnce, class [`Self::ledger_storage_class`], reserved
    /// for that claim (`claimRef`), a hostPath that kwok's fake nodes never
    /// mount. Returns the volume's name, `<ns>-<claim>`; the volume carries
    /// the label `paperbot-e2e/namespace=<ns>` for [`Self::delete_ledger_volumes`].
    pub fn provision_ledger_volume(&self, ns: &str, claim: &str, size: &str) -> String {
        let class = self.ledger_storage_class();
        let name = format!("{ns}-{claim}");
        self.kubectl_stdin_ok(
            &["apply", "-f", "-"],
            &format!(
                r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: {name}
  labels: {{paperbot-e2e/namespace: {ns}}}
spec:
  capacity: {{storage: {size}}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: {class}
  claimRef: {{namespace: {ns}, name: {claim}}}
  hostPath: {{path: /tmp/paperbot-e2e/{name}, type: DirectoryOrCreate}}
"#
            ),
        );
        name
    }

    /// Delete the PersistentVolumes [`Self::provision_ledger_volume`] made for `ns`.
    pub fn delete_ledger_volumes(&self, ns: &str) {
        self.kubectl_ok(&[
            "delete",
            "pv",
            "-l",
            &format!("paperbot-e2e/namespace={ns}"),
            "--wait=false",
        ]);
    }

    /// `kubectl ARGS` with `stdin`, panicking with its output unless it succeeds.
    pub fn kubectl_stdin_ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}{}\ninput:\n{stdin}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Namespace of the operator identities ([`ControlPlane::operator_identity`]):
/// their ServiceAccounts, and the Leases of tests that elect a leader.
pub const OPERATOR_NAMESPACE: &str = "paperbot-e2e";

/// An identity the operator runs with in the tests: the chart's
/// ServiceAccount and RBAC ([`ControlPlane::operator_identity`]).
#[derive(Clone, Debug)]
pub struct Identity {
    /// The release name it was made for, e.g. `operator-a`.
    pub name: String,
    /// The user name the API server audits, `system:serviceaccount:<ns>:<account>`.
    pub username: String,
    /// Namespace of the ServiceAccount (the release namespace, where the
    /// chart lets the operator hold its Lease).
    pub namespace: String,
    /// A kubeconfig authenticating with the ServiceAccount's token.
    pub kubeconfig: PathBuf,
}

impl Identity {
    /// A kube client authenticated as this identity.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kube config");
        kube::Client::try_from(cfg).expect("client")
    }
}

/// One request in the API server's audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...
    pub verb: String,
    /// Plural resource, e.g. `statefulsets`.
    pub resource: String,
    /// Subresource, e.g. `status`, or empty.
    pub subresource: String,
    /// Namespace, or empty for cluster-scoped requests.
    pub namespace: String,
    /// Object name, or empty for collections.
    pub name: String,
    /// HTTP status code of the response (0 when absent).
    pub code: u16,
    /// When the API server received the request.
    pub received: chrono::DateTime<chrono::Utc>,
}

impl AuditEvent {
    /// The event of one audit log line when it is `user`'s complete response.
    fn parse(line: &str, user: &str) -> Option<Self> {
        let e: serde_json::Value = serde_json::from_str(line).ok()?;
        if e["stage"] != "ResponseComplete" || e["user"]["username"] != user {
            return None;
        }
        let o = &e["objectRef"];
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        Some(Self {
            verb: s(&e["verb"]),
            resource: s(&o["resource"]),
            subresource: s(&o["subresource"]),
            namespace: s(&o["namespace"]),
            name: s(&o["name"]),
            code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            received: e["requestReceivedTimestamp"].as_str()?.parse().ok()?,
        })
    }

    /// Whether the request changes state (create, update, patch, delete).
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

impl std::fmt::Display for AuditEvent {
    /// `verb resource[/subresource] namespace/name`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sub = if self.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", self.subresource)
        };
        write!(
            f,
            "{} {}{sub} {}/{}",
            self.verb, self.resource, self.namespace, self.name
        )
    }
}

/// StorageClass of the ledger volumes in the end-to-end tests.
pub const LEDGER_STORAGE_CLASS: &str = "paperbot-e2e";
