//! A real `bot-runtime feed` child process for the integration tests:
//! started with a YAML config written to a temp file, listening where it is
//! told (`127.0.0.1:0` for any free port), killed on drop.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
};

/// The 9 symbols the fleet tests trade and their CoinGecko ids (the
/// runtime's built-in table).
pub const SYMBOLS: [(&str, &str); 9] = [
    ("BTC-USD", "bitcoin"),
    ("ETH-USD", "ethereum"),
    ("SOL-USD", "solana"),
    ("BNB-USD", "binancecoin"),
    ("XRP-USD", "ripple"),
    ("ADA-USD", "cardano"),
    ("DOGE-USD", "dogecoin"),
    ("AVAX-USD", "avalanche-2"),
    ("DOT-USD", "polkadot"),
];

/// A `bot-runtime feed` process.
pub struct FeedProcess {
    child: Child,
    /// Its base URL, `http://127.0.0.1:<port>` (from its first stdout line).
    pub url: String,
    _config: tempfile::NamedTempFile,
}

impl FeedProcess {
    /// Start `bot-runtime feed` with `config` (the YAML text of
    /// `feed.yaml`), `env` added to its environment, listening on `listen`
    /// (`host:port`). Returns once it printed its listening line.
    pub fn start(config: &str, env: &[(&str, &str)], listen: &str) -> Self {
        let file = tempfile::NamedTempFile::new().expect("temp feed config");
        std::fs::write(file.path(), config).expect("write the feed config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bot-runtime"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .args(["feed", "--config"])
            .arg(file.path())
            .args(["--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start bot-runtime feed");
        let stdout = child.stdout.take().expect("feed stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the feed's listening line");
        let url = line
            .trim()
            .strip_prefix("feed listening on ")
            .unwrap_or_else(|| panic!("feed did not start: first line {line:?}"))
            .to_string();
        Self {
            child,
            url,
            _config: file,
        }
    }

    /// Its `host:port` (the URL without `http://`), to start a new feed on
    /// the same address.
    pub fn listen_addr(&self) -> String {
        self.url
            .strip_prefix("http://")
            .expect("an http:// feed URL")
            .to_string()
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.listen_addr()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the feed's port")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status (graceful shutdown exits 0).
    pub fn terminate(mut self) -> ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill(2) on our own child's pid with a valid signal.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to the feed failed");
        self.child.wait().expect("wait for the feed")
    }

    /// `kill -9` and reap.
    pub fn kill(mut self) {
        self.child.kill().expect("kill the feed");
        self.child.wait().expect("wait for the feed");
    }
}

impl Drop for FeedProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
