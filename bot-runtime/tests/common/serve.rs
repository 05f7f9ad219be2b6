//! A `bot-runtime serve` child process for the integration tests: started
//! on a free loopback port with a bearer token, its stderr in a log file,
//! answered over plain HTTP/1.1, killed on drop. Every wait polls with a
//! generous deadline; nothing asserts a duration.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use bot_runtime::ledger::{self, LedgerStore, records::LedgerBatch};
use rust_decimal::Decimal;
use serde_json::Value;

/// The bearer token the served API is given.
pub const TOKEN: &str = "live-token";
/// How long any wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// One HTTP/1.1 request to the runtime's API on `port`, with `token` as the
/// bearer token when given and `body` as JSON; the status code and the body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the runtime's API");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let body = body.unwrap_or("");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"));
    (code, rest.to_string())
}

/// One HTTP/1.1 GET with the token; status code and body.
pub fn get(port: u16, path: &str) -> (u16, String) {
    http(port, "GET", path, Some(TOKEN), None)
}

/// Run `f` to completion on a fresh current-thread tokio runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The canonical dump of session `id` in the ledger at `url` (see
/// `LedgerStore::dump_session`).
pub fn dump(url: &str, id: &str) -> String {
    block_on(async {
        let l = ledger::open(url).await.expect("open ledger");
        let d = l.dump_session(id).await.expect("dump");
        l.close().await;
        d
    })
}

/// Every committed record of session `id` in the ledger at `url`.
pub fn records(url: &str, id: &str) -> LedgerBatch {
    block_on(read_records(url, id))
}

/// [`records`], for async tests.
pub async fn read_records(url: &str, id: &str) -> LedgerBatch {
    let l = ledger::open(url).await.unwrap();
    let mut all = LedgerBatch::default();
    l.read_records(id, 4096, &mut |b| {
        all.append(b);
        Ok(())
    })
    .await
    .unwrap();
    l.close().await;
    all
}

/// The accounting invariant, exactly, at every stored snapshot of `recs`
/// (of an account that started with `initial`): cash + position value =
/// equity = initial + realized P&L + unrealized P&L. `what` names the
/// session in the failure message. At least one snapshot is required.
pub fn assert_accounting_exact(what: &str, recs: &LedgerBatch, initial: Decimal) {
    assert!(!recs.snapshots.is_empty(), "{what}: no snapshot stored");
    for snap in &recs.snapshots {
        assert_eq!(
            snap.cash + snap.position_value,
            snap.equity,
            "{what}: cash + position value at {}",
            snap.time
        );
        assert_eq!(
            initial + snap.realized_pnl + snap.unrealized_pnl,
            snap.equity,
            "{what}: initial + P&L at {}",
            snap.time
        );
    }
}

/// A `bot-runtime serve` process.
pub struct Runtime {
    child: Child,
    /// Its API port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl Runtime {
    /// Serve `manifest` with the ledger at `ledger_url`, files in `dir`,
    /// `env` added to the child's environment (`RUST_LOG=info`; the ledger,
    /// token and `SSL_CERT_FILE` variables of the test's own environment are
    /// removed first). Returns once `/healthz` answers 200.
    pub fn start(dir: &Path, manifest: &Path, ledger_url: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(dir, manifest, ledger_url, env, &[])
    }

    /// As [`start`](Self::start), with `args` appended to the `serve`
    /// command line (e.g. `--snapshot-interval 2s`).
    pub fn start_with_args(
        dir: &Path,
        manifest: &Path,
        ledger_url: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        let n = std::fs::read_dir(dir).unwrap().count();
        let log = dir.join(format!("serve-{n}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bot-runtime"));
        cmd.env("RUST_LOG", "info")
            .env_remove("DATABASE_URL")
            .env_remove("PAPERBOT_LEDGER")
            .env_remove("PAPERBOT_API_TOKEN")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .arg("serve")
            .arg("-f")
            .arg(manifest)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "none", "--ledger", ledger_url])
            .arg("--report-dir")
            .arg(dir.join("reports"))
            .arg("--token-file")
            .arg(dir.join("token"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn bot-runtime serve");
        let addr =
            paperbot_testkit::wait_for_logged_addr(&mut child, &log, "API listening", DEADLINE)
                .unwrap_or_else(|e| panic!("serve: {e}"));
        let mut rt = Self {
            child,
            port: addr.port(),
            log,
        };
        let port = rt.port;
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = rt.child.try_wait() {
                panic!(
                    "serve exited ({status}) before answering:\n{}",
                    rt.log_text()
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok()
                && http(port, "GET", "/healthz", None, None).0 == 200
            {
                // Probes are open; the session's routes need its token.
                let (code, body) = http(port, "GET", "/v1/status", None, None);
                assert_eq!(code, 401, "{body}");
                let (code, body) = http(port, "GET", "/v1/status", Some("wrong"), None);
                assert_eq!(code, 403, "{body}");
                return rt;
            }
            assert!(
                t0.elapsed() < DEADLINE,
                "the API never answered:\n{}",
                rt.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status once the process has exited (`Ok(None)` while it
    /// runs).
    pub fn child_status(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// GET `path` with the token; status code and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        get(self.port, path)
    }

    /// POST `body` (JSON) to `path` with the token; the status code and
    /// the answer as JSON (a JSON string when it is not JSON).
    pub fn post(&self, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(Value::to_string);
        let (code, text) = http(self.port, "POST", path, Some(TOKEN), body.as_deref());
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `GET /v1/status`, which must answer 200.
    pub fn status(&self) -> Value {
        let (code, body) = get(self.port, "/v1/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `GET /metrics` on the API port (Prometheus text), which must answer
    /// 200.
    pub fn metrics(&self) -> String {
        let (code, body) = get(self.port, "/metrics");
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Poll `/v1/status` until `f` holds; the last status.
    pub fn wait_for(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let s = self.status();
            if f(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < DEADLINE,
                "waited in vain for {what}; last status: {s:#}\nlog:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Poll the log until `f` holds for it; the log.
    pub fn wait_for_log(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let log = self.log_text();
            if f(&log) {
                return log;
            }
            assert!(
                t0.elapsed() < DEADLINE,
                "waited in vain for {what} in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Send signal `sig` to the process.
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    }

    /// Wait until the process exits (`what` names the wait in a failure).
    pub fn wait_exit(&mut self, what: &str) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t0.elapsed() < DEADLINE,
                "serve did not exit {what}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; the process must exit successfully.
    pub fn terminate(mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit("after SIGTERM");
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            self.log_text()
        );
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
