//! A `sh` process that runs one `postgres` server process and stops it when
//! told to, or when the test process dies.
//!
//! The test process holds the write end of the supervisor's stdin. A line
//! (`stop`) asks for a fast shutdown (SIGINT) that keeps the data directory,
//! so the server can be started again on it. End of file — the test process
//! exited or was killed, so nobody will ever call `Drop` on a server kept in
//! a `static` — shuts the server down immediately (SIGQUIT) and removes the
//! whole fixture directory.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::FixtureError;

/// `$1` = directory removed on EOF, `$2` = log file, rest = the server command.
const SCRIPT: &str = r#"
root=$1; log=$2; shift 2
"$@" </dev/null >>"$log" 2>&1 &
pid=$!
echo "$pid"
if read -r _; then
  kill -INT "$pid" 2>/dev/null
  wait "$pid"
else
  kill -QUIT "$pid" 2>/dev/null
  wait "$pid"
  rm -rf "$root"
fi
"#;

/// A running supervisor and the pid of its server.
#[derive(Debug)]
pub(crate) struct Supervisor {
    child: Child,
    stdin: ChildStdin,
    /// Process id of `postgres` (the postmaster).
    pub(crate) pid: u32,
}

impl Supervisor {
    /// Start `server` (a command with its arguments) under a supervisor.
    pub(crate) fn spawn(root: &Path, log: &Path, server: &Command) -> Result<Self, FixtureError> {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(SCRIPT)
            .arg("paperbot-pg-supervisor")
            .arg(root)
            .arg(log)
            .arg(server.get_program())
            .args(server.get_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = sh.spawn().map_err(|source| FixtureError::Io {
            what: "start the server supervisor (sh)".into(),
            source,
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(FixtureError::Command {
                what: "supervisor pipes".into(),
                output: "stdin/stdout not captured".into(),
            });
        };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|source| FixtureError::Io {
                what: "read the server's pid from the supervisor".into(),
                source,
            })?;
        let pid = line.trim().parse().map_err(|_| FixtureError::Command {
            what: "supervisor".into(),
            output: format!("expected the server's pid, got {line:?}"),
        })?;
        Ok(Self { child, stdin, pid })
    }

    /// True while the server process exists and is not a zombie.
    pub(crate) fn server_alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            // Format: `pid (comm) state ...`; comm may hold spaces.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X"),
            Err(_) => false,
        }
    }

    /// Fast shutdown (SIGINT), keeping the data directory; waits until the
    /// server has exited.
    pub(crate) fn stop(mut self) -> Result<(), FixtureError> {
        // A failed write means the supervisor is gone already.
        let _ = self.stdin.write_all(b"stop\n");
        let _ = self.stdin.flush();
        self.child.wait().map_err(|source| FixtureError::Io {
            what: "wait for the server to stop".into(),
            source,
        })?;
        Ok(())
    }
}
