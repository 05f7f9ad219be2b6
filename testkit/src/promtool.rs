//! `promtool check metrics` on a Prometheus text exposition, for the tests of
//! every `/metrics` endpoint (promtool comes with Debian's `prometheus`
//! package; `.ci/run` installs it).

use std::{
    io::Write,
    process::{Command, Stdio},
};

/// Run `promtool check metrics` on `text` (the body of a `/metrics`
/// response) and return its findings: empty when the exposition is clean.
///
/// # Errors
/// A message naming how to install promtool when it cannot be started, or
/// what failed while talking to it.
pub fn promtool_findings(text: &str) -> Result<String, String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "promtool is needed ({e}); install it with `apt-get install prometheus` \
                 (Debian/Ubuntu) or put a Prometheus release's promtool on PATH"
            )
        })?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| "promtool's stdin was not piped".to_string())?;
    stdin
        .write_all(text.as_bytes())
        .map_err(|e| format!("writing to promtool: {e}"))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for promtool: {e}"))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() || !report.trim().is_empty() {
        Ok(report.trim().to_string())
    } else {
        Err(format!("promtool check metrics failed with {}", out.status))
    }
}

/// Assert that `promtool check metrics` finds nothing to say about `text`;
/// `what` names the endpoint in the failure message.
///
/// # Panics
/// When promtool is missing or reports anything (the report and the
/// exposition are in the message): this is a test helper.
pub fn assert_promtool_clean(what: &str, text: &str) {
    match promtool_findings(text) {
        Ok(report) if report.is_empty() => {}
        Ok(report) => panic!("promtool check metrics on {what}:\n{report}\n{text}"),
        Err(e) => panic!("{what}: {e}"),
    }
}
