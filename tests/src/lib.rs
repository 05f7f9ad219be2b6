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

pub mod fake_runtime;

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

    /// Write requests (create, update, patch, delete) the API server audited
    /// for `user`, as `verb resource[/subresource] namespace/name`, in order.
    pub fn audited_writes(&self, user: &str) -> Vec<String> {
        let log = self
            .audit_log
            .as_ref()
            .expect("this plane has an audit log");
        let text = std::fs::read_to_string(log).expect("audit log readable");
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["stage"] == "ResponseComplete" && e["user"]["username"] == user)
            .filter(|e| {
                matches!(
                    e["verb"].as_str(),
                    Some("create" | "update" | "patch" | "delete" | "deletecollection")
                )
            })
            .map(|e| {
                let o = &e["objectRef"];
                let sub = o["subresource"]
                    .as_str()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default();
                format!(
                    "{} {}{sub} {}/{}",
                    e["verb"].as_str().unwrap_or_default(),
                    o["resource"].as_str().unwrap_or_default(),
                    o["namespace"].as_str().unwrap_or_default(),
                    o["name"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }

    /// [`Self::audited_writes`] of `user` in namespace `ns` only.
    pub fn audited_writes_in(&self, user: &str, ns: &str) -> Vec<String> {
        let marker = format!(" {ns}/");
        self.audited_writes(user)
            .into_iter()
            .filter(|w| w.contains(&marker))
            .collect()
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

/// StorageClass of the ledger volumes in the end-to-end tests.
pub const LEDGER_STORAGE_CLASS: &str = "paperbot-e2e";
