//! The PostgreSQL fixture against the real server binaries.

use std::process::{Command, Stdio};
use std::time::Duration;

use paperbot_testkit::PostgresServer;

#[test]
fn server_keeps_data_across_stop_and_start_and_cleans_up_on_drop() {
    let mut server = PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = server.dir().to_path_buf();
    let url = server.create_database("fixture_data").unwrap();
    assert_eq!(
        url,
        format!(
            "postgres://postgres@127.0.0.1:{}/fixture_data",
            server.port()
        )
    );
    server
        .psql(
            "fixture_data",
            "CREATE TABLE t (v NUMERIC NOT NULL); INSERT INTO t VALUES (0.10), (2.500)",
        )
        .unwrap();
    assert!(server.is_running());

    server.stop().unwrap();
    assert!(!server.is_running());
    let err = server.psql("fixture_data", "SELECT 1").unwrap_err();
    assert!(err.to_string().contains("psql"), "{err}");

    let port = server.port();
    server.start_again().unwrap();
    assert_eq!(server.port(), port);
    let rows = server
        .psql("fixture_data", "SELECT v FROM t ORDER BY v")
        .unwrap();
    assert_eq!(rows, "0.10\n2.500\n");

    // A database name that could inject SQL is refused.
    let err = server.create_database("x\"; DROP").unwrap_err();
    assert!(
        err.to_string().contains("invalid test database name"),
        "{err}"
    );

    drop(server);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn kill_connections_cuts_live_clients() {
    let server = PostgresServer::shared().unwrap_or_else(|e| panic!("{e}"));
    server.create_database("fixture_kill").unwrap();
    let client = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p"])
        .arg(server.port().to_string())
        .args([
            "-U",
            "postgres",
            "-d",
            "fixture_kill",
            "-c",
            "SELECT pg_sleep(120)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the client's session exists, then cut it.
    let mut killed = 0;
    for _ in 0..200 {
        killed = server.kill_connections("fixture_kill").unwrap();
        if killed > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(killed, 1);
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("terminat"), "{stderr}");
}
