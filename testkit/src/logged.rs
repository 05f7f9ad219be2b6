//! Addresses that a process bound to port 0 reports in its log.
//!
//! A test that picks a free port, releases it and hands it to a child
//! process races every other process on the machine: the port can be taken
//! before the child binds it (CI once gave two parallel runtimes the same
//! port, and the test spoke to one of them twice). So the tests start
//! servers on port 0 and read the address back from the line the server
//! logs when it has bound.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// The address in the first line of `log` that contains `message` and an
/// `addr` field, in either log format of the paperbot binaries:
/// text (`... API listening addr=127.0.0.1:41815`) or JSON
/// (`{"fields":{"message":"API listening","addr":"127.0.0.1:41815"}}`).
/// `None` until such a line has been written.
pub fn logged_addr(log: &str, message: &str) -> Option<SocketAddr> {
    log.lines().filter(|l| l.contains(message)).find_map(|l| {
        let rest = l
            .split_once("\"addr\":\"")
            .or_else(|| l.split_once(" addr="))?
            .1;
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

/// Wait until `child`, which writes its log to the file `log`, has logged
/// the address it bound (the first line with `message`, read by
/// [`logged_addr`]); polls every 50 ms.
///
/// # Errors
/// When `child` exits first or `timeout` passes: what happened, with the
/// log so far. The child is then killed and reaped, so no process outlives
/// the failed start.
pub fn wait_for_logged_addr(
    child: &mut Child,
    log: &Path,
    message: &str,
    timeout: Duration,
) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = logged_addr(&text, message) {
            return Ok(addr);
        }
        let failure = match child.try_wait() {
            Ok(Some(status)) => Some(format!("exited ({status})")),
            _ if Instant::now() >= deadline => {
                Some(format!("logged no {message:?} address within {timeout:?}"))
            }
            _ => None,
        };
        if let Some(failure) = failure {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{failure}; log {}:\n{text}", log.display()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_text_and_json_lines() {
        let text = "2026-11-30T18:04:12Z  INFO serving session session=live\n\
                    2026-11-30T18:04:12Z  INFO API listening addr=127.0.0.1:41815\n";
        assert_eq!(
            logged_addr(text, "API listening"),
            Some("127.0.0.1:41815".parse().unwrap())
        );
        let json = r#"{"level":"INFO","fields":{"message":"API listening","addr":"127.0.0.1:41816"},"target":"bot_runtime::api"}"#;
        assert_eq!(
            logged_addr(json, "API listening"),
            Some("127.0.0.1:41816".parse().unwrap())
        );
        let operator = "INFO paperbot_operator::server: serving /metrics, /healthz and /readyz addr=127.0.0.1:9\n";
        assert_eq!(
            logged_addr(operator, "/readyz"),
            Some("127.0.0.1:9".parse().unwrap())
        );
    }

    #[test]
    fn waiting_ends_with_the_address_or_the_reason() {
        let log = std::env::temp_dir().join(format!("paperbot-logged-{}.log", std::process::id()));
        let sh = |script: &str| {
            // Each case starts from no log.
            let _ = std::fs::remove_file(&log);
            std::process::Command::new("sh")
                .args(["-c", script])
                .arg("sh")
                .arg(&log)
                .spawn()
                .unwrap()
        };
        let mut child = sh("echo 'INFO API listening addr=127.0.0.1:7' > \"$1\"; sleep 30");
        let got = wait_for_logged_addr(&mut child, &log, "API listening", Duration::from_secs(20));
        assert_eq!(got, Ok("127.0.0.1:7".parse().unwrap()));
        let _ = child.kill();
        let _ = child.wait();

        let mut child = sh("echo 'bind: address in use' > \"$1\"; exit 3");
        let err = wait_for_logged_addr(&mut child, &log, "API listening", Duration::from_secs(20))
            .unwrap_err();
        assert!(
            err.starts_with("exited (exit status: 3)") && err.contains("address in use"),
            "{err}"
        );

        let mut child = sh("sleep 30");
        let err = wait_for_logged_addr(
            &mut child,
            &log,
            "API listening",
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.contains("logged no \"API listening\" address"), "{err}");
        assert!(
            child.try_wait().unwrap().is_some(),
            "the child is killed and reaped"
        );
        let _ = std::fs::remove_file(&log);
    }

    #[test]
    fn nothing_before_the_line_is_written_or_from_other_lines() {
        assert_eq!(logged_addr("", "API listening"), None);
        assert_eq!(
            logged_addr("INFO feed started addr=127.0.0.1:5\n", "API listening"),
            None
        );
        assert_eq!(
            logged_addr("INFO API listening addr=127.0.0.1:", "API listening"),
            None
        );
    }
}
