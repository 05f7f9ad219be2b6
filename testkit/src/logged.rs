//! Addresses that a process bound to port 0 reports in its log.
//!
//! A test that picks a free port, releases it and hands it to a child
//! process races every other process on the machine: the port can be taken
//! before the child binds it (CI once gave two parallel runtimes the same
//! port, and the test spoke to one of them twice). So the tests start
//! servers on port 0 and read the address back from the line the server
//! logs when it has bound.

use std::net::SocketAddr;

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

#[cfg(test)]
mod tests {
    use super::logged_addr;

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
