//! A throw-away PostgreSQL server for tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::install::Installation;
use crate::supervisor::Supervisor;

/// How long a server may take to accept connections after `postgres` starts.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Attempts at finding a free port when the first one is taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// The superuser created by `initdb -U`.
pub const SUPERUSER: &str = "postgres";

/// Why the fixture could not do what was asked. Every message names what
/// was attempted and, for the server, the tail of its log.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// No PostgreSQL server binaries.
    #[error(
        "PostgreSQL server binaries not found in {looked_in}: install Debian's `postgresql` \
         package (apt-get install postgresql) or set PAPERBOT_PG_BIN to a directory holding \
         initdb, postgres and psql"
    )]
    NotInstalled {
        /// Where they were looked for.
        looked_in: String,
    },
    /// Running as root, but there is no `postgres` user to run the server as.
    #[error(
        "running as root needs a `postgres` system user to run initdb and postgres \
         (Debian's postgresql-common package creates it)"
    )]
    NoUser,
    /// A file-system or process operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{what} failed:\n{output}")]
    Command {
        /// The command.
        what: String,
        /// Its output (stderr), or the server log's tail.
        output: String,
    },
    /// A database name that is not `[a-z0-9_]{1,63}` starting with a letter.
    #[error("invalid test database name {0:?}: expected 1-63 of [a-z0-9_], starting with a letter")]
    InvalidName(String),
    /// The shared server failed to start earlier in this process.
    #[error("the shared PostgreSQL test server could not be started: {0}")]
    Shared(String),
}

/// A PostgreSQL server in its own temporary directory, listening on a free
/// loopback TCP port (unix socket in the same directory), superuser
/// `postgres` with `trust` authentication, `fsync=off` (test data only).
///
/// Dropping it stops the server (fast shutdown) and removes the directory.
/// If the test process dies instead, the server's supervisor notices (its
/// stdin closes), stops the server and removes the directory too.
#[derive(Debug)]
pub struct PostgresServer {
    install: Installation,
    root: PathBuf,
    port: u16,
    /// Extra `-c name=value` settings, after the fixture's own.
    settings: Vec<String>,
    running: Option<Supervisor>,
}

impl PostgresServer {
    /// `initdb` a new cluster in a fresh temporary directory and start it.
    /// Takes one to two seconds.
    ///
    /// # Errors
    /// [`FixtureError::NotInstalled`] naming the package to install, or what
    /// failed (with the server log's tail).
    pub fn start() -> Result<Self, FixtureError> {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), with extra server settings `name=value`
    /// that override the fixture's (e.g. `fsync=on` for a durable server in
    /// a benchmark).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(settings: &[&str]) -> Result<Self, FixtureError> {
        Self::start_inner(settings, None)
    }

    /// As [`start`](Self::start), with TLS on (`ssl=on`): the server
    /// presents certificate chain `cert_pem` (PEM, leaf first) with private
    /// key `key_pem` (PEM). Clients may still connect without TLS, as with
    /// PostgreSQL's default `pg_hba.conf` (`host`, not `hostssl`), so a test
    /// can check which one a client chose (`pg_stat_ssl`).
    ///
    /// # Errors
    /// As [`start`](Self::start); the files cannot be written; the server
    /// refuses the certificate or key (its log's tail in the error).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Result<Self, FixtureError> {
        Self::start_inner(&[], Some((cert_pem, key_pem)))
    }

    fn start_inner(settings: &[&str], tls: Option<(&str, &str)>) -> Result<Self, FixtureError> {
        let install = Installation::find()?;
        let root = fresh_dir()?;
        let mut server = Self {
            install,
            root,
            port: 0,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            running: None,
        };
        server.init()?;
        if let Some((cert, key)) = tls {
            server.write_tls_files(cert, key)?;
        }
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                // The port may have been taken between probing and binding.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(FixtureError::Command {
            what: "start postgres".into(),
            output: "no attempt was made".into(),
        }))
    }

    /// One server shared by every test of this process, started on first
    /// use. Tests isolate themselves with [`create_database`](Self::create_database).
    /// Never stopped by a test (use your own [`start`](Self::start) for
    /// outage tests); the supervisor removes it when the process exits.
    ///
    /// # Errors
    /// [`FixtureError::Shared`] with the reason the server could not start.
    pub fn shared() -> Result<&'static Self, FixtureError> {
        static SHARED: OnceLock<Result<PostgresServer, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| FixtureError::Shared(e.clone()))
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The fixture's directory (data directory `data/`, socket, `server.log`).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// URL of the `postgres` database: `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Create database `name` (1-63 of `[a-z0-9_]`, starting with a letter)
    /// and return its URL.
    ///
    /// # Errors
    /// [`FixtureError::InvalidName`], or the `CREATE DATABASE` failure (e.g.
    /// it exists).
    pub fn create_database(&self, name: &str) -> Result<String, FixtureError> {
        let valid = (1..=63).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(FixtureError::InvalidName(name.to_owned()));
        }
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url_for(name))
    }

    /// Terminate every client connection to database `db` (as a network cut
    /// or a server-side kill would); returns how many were terminated.
    /// Waits (up to 10 s per backend) until each backend has exited, so the
    /// session-level locks it held are released when this returns: without
    /// the wait, a test that takes over a lock right after the cut races
    /// the dying backend. Needs PostgreSQL 13 or later (the two-argument
    /// `pg_terminate_backend`).
    ///
    /// # Errors
    /// If `psql` fails.
    pub fn kill_connections(&self, db: &str) -> Result<u64, FixtureError> {
        let out = self.psql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid()",
                db.replace('\'', "''")
            ),
        )?;
        out.trim().parse().map_err(|_| FixtureError::Command {
            what: "kill_connections".into(),
            output: format!("expected a count, got {out:?}"),
        })
    }

    /// Run one SQL command on database `db` with `psql`; returns its
    /// unaligned, tuples-only output.
    ///
    /// # Errors
    /// If `psql` cannot run or the command fails (its stderr in the error).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, FixtureError> {
        let out = Command::new(self.install.tool("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db, "-c", sql])
            .output()
            .map_err(|source| FixtureError::Io {
                what: "run psql".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(FixtureError::Command {
                what: format!("psql -c {sql:?}"),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// True while the server runs (between start and [`stop`](Self::stop)).
    pub fn is_running(&self) -> bool {
        self.running.as_ref().is_some_and(Supervisor::server_alive)
    }

    /// Fast shutdown (clients are disconnected, committed data is kept);
    /// returns once the server has exited. A no-op when stopped.
    ///
    /// # Errors
    /// If waiting for the server fails.
    pub fn stop(&mut self) -> Result<(), FixtureError> {
        match self.running.take() {
            Some(s) => s.stop(),
            None => Ok(()),
        }
    }

    /// Start the server again on the same data directory and port (after
    /// [`stop`](Self::stop)); returns once it accepts connections. A no-op
    /// when running.
    ///
    /// # Errors
    /// What failed, with the server log's tail (e.g. the port was taken
    /// while the server was down).
    pub fn start_again(&mut self) -> Result<(), FixtureError> {
        if self.running.is_some() {
            return Ok(());
        }
        self.launch()
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// `initdb` (as the postgres user when root).
    fn init(&self) -> Result<(), FixtureError> {
        self.install.hand_over(&self.root)?;
        let out = self
            .install
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale"])
            .arg("--no-sync")
            .output()
            .map_err(|source| FixtureError::Io {
                what: "run initdb".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(FixtureError::Command {
                what: format!("initdb -D {}", self.data_dir().display()),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(())
    }

    /// Write `server.crt` and `server.key` into the data directory (0600,
    /// owned by the server's user, as PostgreSQL requires of the key) and
    /// turn `ssl` on.
    fn write_tls_files(&mut self, cert_pem: &str, key_pem: &str) -> Result<(), FixtureError> {
        use std::os::unix::fs::PermissionsExt as _;
        for (name, pem) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = self.data_dir().join(name);
            let io = |what: &str, source| FixtureError::Io {
                what: format!("{what} {}", path.display()),
                source,
            };
            std::fs::write(&path, pem).map_err(|e| io("write", e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io("chmod 0600", e))?;
            self.install.hand_over(&path)?;
        }
        // Relative paths are read from the data directory.
        self.settings.extend([
            "ssl=on".to_owned(),
            "ssl_cert_file=server.crt".to_owned(),
            "ssl_key_file=server.key".to_owned(),
        ]);
        Ok(())
    }

    /// Start `postgres` under a supervisor and wait until it accepts
    /// connections.
    fn launch(&mut self) -> Result<(), FixtureError> {
        let mut cmd = self.install.command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.root)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"]);
        for setting in &self.settings {
            cmd.arg("-c").arg(setting);
        }
        let supervisor = Supervisor::spawn(&self.root, &self.log_path(), &cmd)?;
        let started = Instant::now();
        loop {
            if !supervisor.server_alive() {
                let _ = supervisor.stop();
                return Err(self.failure("postgres exited during start-up"));
            }
            if self.accepts_connections() {
                self.running = Some(supervisor);
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = supervisor.stop();
                return Err(self.failure(&format!(
                    "postgres did not accept connections within {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One `SELECT 1` through psql.
    fn accepts_connections(&self) -> bool {
        self.psql("postgres", "SELECT 1")
            .is_ok_and(|out| out.trim() == "1")
    }

    /// An error carrying the last lines of the server log.
    fn failure(&self, what: &str) -> FixtureError {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        FixtureError::Command {
            what: format!("{what} (port {}, {})", self.port, self.root.display()),
            output: tail.join("\n"),
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A new empty directory under the system's temp dir.
fn fresh_dir() -> Result<PathBuf, FixtureError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "paperbot-pg-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).map_err(|source| FixtureError::Io {
        what: format!("create {}", dir.display()),
        source,
    })?;
    Ok(dir)
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, FixtureError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| FixtureError::Io {
        what: "find a free loopback port".into(),
        source,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| FixtureError::Io {
            what: "read the probed port".into(),
            source,
        })
}
