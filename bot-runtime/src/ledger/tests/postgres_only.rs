//! PostgreSQL-only behaviour, against real servers: the migration lock, the
//! NUMERIC form, a database outage, lock connections cut under a writer,
//! and passwords kept out of errors.

use std::time::Duration;

use paperbot_testkit::PostgresServer;
use rust_decimal_macros::dec;

use super::fixture::{self, Fixture, Postgres, open};
use super::suite::{uninterrupted, workload, write_rest_and_finish};
use crate::ledger::sample::{Gen, end, session};
use crate::ledger::{self, Ledger, LedgerError, LedgerStore, PgLedger};

/// SQL condition keeping the `pg_locks` rows of the test's own database.
/// The test server is shared by every test in the binary, and `pg_locks`
/// lists the advisory locks of all its databases, so an unscoped count
/// races with whichever other tests are holding session locks.
macro_rules! this_database {
    () => {
        "database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    };
}

fn pg(l: &Ledger) -> &PgLedger {
    match l {
        Ledger::Postgres(l) => l,
        Ledger::Sqlite(_) => panic!("expected a PostgreSQL ledger"),
    }
}

/// Runtimes starting together on an empty database: sqlx's migration lock
/// (pg_advisory_lock keyed by the database name) lets one apply the schema;
/// the others wait and find it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_apply_the_schema_once() {
    let url = Postgres::new().fresh("concurrent");
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { ledger::open(&url).await })
        })
        .collect();
    let mut ledgers = Vec::new();
    for o in opens {
        ledgers.push(
            o.await
                .unwrap()
                .unwrap_or_else(|e| panic!("concurrent open: {e}")),
        );
    }
    assert_eq!(
        fixture::scalar(&ledgers[0], "SELECT COUNT(*) FROM _sqlx_migrations").await,
        1
    );
    // No migration lock outlives the migrations.
    let held = fixture::scalar(
        &ledgers[0],
        concat!(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND ",
            this_database!()
        ),
    )
    .await;
    assert_eq!(held, 0);
    for l in ledgers {
        assert_eq!(l.backend(), "PostgreSQL");
        l.close().await;
    }
}

#[tokio::test]
async fn decimals_are_numeric_with_their_scale() {
    let mut l = open(&Postgres::new().fresh("numeric")).await;
    l.start_session(&session("num"), "w").await.unwrap();
    l.write_batch(&Gen::default().batch(1, 1, 0, 0), "{}")
        .await
        .unwrap();
    let (kind, fee, gas): (String, String, String) = sqlx::query_as(
        "SELECT pg_typeof(fee)::text, fee::text, gas::text FROM trades WHERE session_id = 'num'",
    )
    .fetch_one(pg(&l).pool())
    .await
    .unwrap();
    assert_eq!(
        (kind.as_str(), fee.as_str(), gas.as_str()),
        ("numeric", "0.0997", "0.50")
    );
    // The session holds its advisory lock on a connection of its own.
    let locks = fixture::scalar(
        &l,
        concat!(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND pid <> pg_backend_pid() AND ",
            this_database!()
        ),
    )
    .await;
    assert_eq!(locks, 1);
    l.finish_session(&end(dec!(1))).await.unwrap();
    let locks = fixture::scalar(
        &l,
        concat!(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND ",
            this_database!()
        ),
    )
    .await;
    assert_eq!(locks, 0, "finishing releases the lock");
    l.close().await;
}

/// The server stops mid-session: writes fail with transient errors and
/// store nothing; once it is back the same batch is retried and the session
/// carries on, with nothing lost or duplicated.
#[tokio::test]
async fn a_database_outage_fails_transiently_and_the_retry_loses_nothing() {
    let mut server = PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database("outage").unwrap();
    let batches = workload();
    let id = "outage";
    let mut l = open(&url).await;
    l.start_session(&session(id), "w").await.unwrap();
    l.write_batch(&batches[0], "c1").await.unwrap();
    l.write_batch(&batches[1], "c2").await.unwrap();

    server.stop().unwrap();
    for _ in 0..3 {
        let err = l.write_batch(&batches[2], "c3").await.unwrap_err();
        assert!(
            err.is_transient(),
            "not transient during the outage: {err:?}"
        );
    }
    let err = l.session(id).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");

    server.start_again().unwrap();
    // The first attempts after the restart may still meet connections the
    // server closed; each such failure is transient and stores nothing.
    let mut failures = 0;
    while let Err(e) = l.write_batch(&batches[2], "c3").await {
        assert!(
            e.is_transient() && failures < 5,
            "retry after restart: {e:?}"
        );
        failures += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dump = write_rest_and_finish(&mut l, id, &batches, 3).await;
    l.close().await;
    let reference = uninterrupted(&Postgres::new().fresh("outage_ref"), id, &batches).await;
    assert_eq!(dump, reference);
}

/// A writer's lock connection is cut (network, server-side kill) and a
/// second runtime takes the session: the first is refused with the new
/// holder's name, and once that holder lets go, fenced by its stale token.
#[tokio::test]
async fn a_writer_whose_lock_connection_was_cut_and_taken_over_is_fenced() {
    let db = "l_cut_takeover";
    let server = Postgres::server();
    let url = server.create_database(db).unwrap();
    let id = "cut";
    let mut g = Gen::default();
    let mut a = open(&url).await;
    a.start_session(&session(id), "runtime A").await.unwrap();
    a.write_batch(&g.batch(5, 5, 1, 1), "a1").await.unwrap();

    assert!(server.kill_connections(db).unwrap() >= 1);
    let mut b = open(&url).await;
    let point = b.resume_session(id, "runtime B").await.unwrap();
    assert_eq!(point.checkpoint.as_deref(), Some("a1"));

    let err = a.write_batch(&g.batch(5, 5, 1, 1), "a2").await.unwrap_err();
    match &err {
        LedgerError::LeaseHeld { holder, .. } => assert_eq!(holder, "runtime B"),
        e => panic!("expected LeaseHeld naming runtime B, got {e:?}"),
    }
    let mut gb = Gen {
        decision_seq: 5,
        trade_seq: 5,
        adjustment_id: 0,
        minute: 5_000,
    };
    b.write_batch(&gb.batch(3, 3, 1, 1), "b1").await.unwrap();
    b.interrupt_session(gb.time()).await.unwrap();

    // B let go: A can take the lock again, but its token is stale.
    let err = a.write_batch(&g.batch(5, 5, 1, 1), "a2").await.unwrap_err();
    assert!(matches!(err, LedgerError::Fenced { .. }), "{err:?}");
    let info = a.session(id).await.unwrap().unwrap();
    assert_eq!((info.batches, info.trades), (2, 8));
    a.close().await;
    b.close().await;
}

/// A writer that lets go of a session (here by recording it interrupted)
/// has released its lock when the call returns: no advisory lock is left,
/// and another writer resumes it at once, every time. (Closing the lock connection alone released the
/// lock only when the server's backend had exited, a moment later, and a
/// writer taking over at once was now and then refused.)
#[tokio::test]
async fn a_session_let_go_can_be_resumed_at_once_by_another_writer() {
    let db = "l_handover";
    let url = Postgres::server().create_database(db).unwrap();
    let id = "handover";
    let mut g = Gen::default();
    let mut writers = [open(&url).await, open(&url).await];
    writers[0]
        .start_session(&session(id), "runtime 0")
        .await
        .unwrap();
    writers[0]
        .write_batch(&g.batch(1, 1, 1, 1), "w0")
        .await
        .unwrap();
    writers[0].interrupt_session(g.time()).await.unwrap();
    const HANDOVERS: usize = 40;
    for n in 1..=HANDOVERS {
        let w = &mut writers[n % 2];
        let point = w
            .resume_session(id, &format!("runtime {n}"))
            .await
            .unwrap_or_else(|e| panic!("handover {n}: {e:?}"));
        assert_eq!(
            point.checkpoint.as_deref(),
            Some(format!("w{}", n - 1).as_str())
        );
        w.write_batch(&g.batch(1, 1, 1, 1), &format!("w{n}"))
            .await
            .unwrap();
        w.interrupt_session(g.time()).await.unwrap();
        let held = fixture::scalar(
            w,
            concat!(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND ",
                this_database!()
            ),
        )
        .await;
        assert_eq!(
            held, 0,
            "handover {n}: the lock is still held after the call returned"
        );
    }
    let info = writers[0].session(id).await.unwrap().unwrap();
    assert_eq!(info.batches, HANDOVERS as u64 + 1);
    for w in writers {
        w.close().await;
    }
}

/// A cut lock connection without a takeover: the writer takes its lock
/// back before the next write and carries on.
#[tokio::test]
async fn a_writer_whose_lock_connection_was_cut_takes_its_lock_back() {
    let db = "l_cut_alone";
    let server = Postgres::server();
    let url = server.create_database(db).unwrap();
    let mut g = Gen::default();
    let mut a = open(&url).await;
    a.start_session(&session("alone"), "runtime A")
        .await
        .unwrap();
    a.write_batch(&g.batch(5, 5, 1, 1), "a1").await.unwrap();
    assert!(server.kill_connections(db).unwrap() >= 1);
    let mut failures = 0;
    while let Err(e) = a.write_batch(&g.clone().batch(5, 5, 1, 1), "a2").await {
        assert!(e.is_transient() && failures < 3, "{e:?}");
        failures += 1;
    }
    g.batch(5, 5, 1, 1);
    // The lock is held again: a second writer is refused.
    let mut b = open(&url).await;
    let err = b.resume_session("alone", "runtime B").await.unwrap_err();
    assert!(matches!(err, LedgerError::LeaseHeld { .. }), "{err:?}");
    a.write_batch(&g.batch(5, 5, 1, 1), "a3").await.unwrap();
    a.finish_session(&end(dec!(1))).await.unwrap();
    assert_eq!(a.session("alone").await.unwrap().unwrap().batches, 3);
    a.close().await;
    b.close().await;
}

/// No error shows the URL's password, whether the URL does not parse, the
/// server is unreachable, or the database does not exist.
#[tokio::test]
async fn errors_never_show_the_password() {
    let server = Postgres::server();
    let port = server.port();
    let unreachable = {
        // A port nobody listens on: bind, note, release.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        (
            format!("postgres://postgres:hunter2@127.0.0.1:{unreachable}/x"),
            true,
        ),
        (
            format!("postgresql://postgres:hunter2@127.0.0.1:{port}/no_such_db"),
            false,
        ),
        (
            "postgres://postgres:hunter2@127.0.0.1:notaport/x".to_owned(),
            false,
        ),
        ("postgres://postgres:hun%74er2@[::1/x".to_owned(), false),
    ];
    for (url, transient) in cases {
        let err = ledger::open(&url).await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("hun%74er2"),
            "password in: {text}"
        );
        assert!(text.contains("***"), "URL not shown redacted: {text}");
        assert_eq!(err.is_transient(), transient, "{url}: {text}");
    }
}

/// A test CA (PEM) and a server certificate chain and key (PEM) signed by
/// it for `127.0.0.1`, the address the test servers listen on.
fn tls_identity() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let name = format!("paperbot test CA {}", N.fetch_add(1, Ordering::Relaxed));
    ca.distinguished_name.push(DnType::CommonName, name);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (
        ca.pem(),
        format!("{}{}", leaf.pem(), ca.pem()),
        key.serialize_pem(),
    )
}

/// The error that refuses to open `url`.
async fn refused(url: &str) -> LedgerError {
    match ledger::open(url).await {
        Ok(_) => panic!("{url} opened; expected a refusal"),
        Err(e) => e,
    }
}

/// Client connections to the test's database: (those without TLS, all of
/// them), counted in one statement (the pool may open a connection
/// between two). Covers the ledger's pool and its lock connection; server
/// processes such as an autovacuum worker are not clients.
async fn tls_connections(l: &Ledger) -> (i64, i64) {
    sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE s.ssl IS NOT TRUE), COUNT(*) \
         FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = current_database() AND a.backend_type = 'client backend'",
    )
    .fetch_one(pg(l).pool())
    .await
    .unwrap()
}

/// TLS to the database, as managed PostgreSQL services and CloudNativePG
/// expect: `sslmode=verify-full` with the server's CA runs a whole session
/// over TLS (the lock connection too); a server certificate from another
/// CA, or `sslmode=require` against a server without TLS, is refused at
/// open with an error naming TLS, not retried as transient;
/// `sslmode=disable` still connects in plain text.
#[tokio::test]
async fn tls_is_used_and_verified_as_the_url_asks() {
    let (ca_pem, chain_pem, key_pem) = tls_identity();
    let server = PostgresServer::start_tls(&chain_pem, &key_pem).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &ca_pem).unwrap();
    let verified = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        server.create_database("tls").unwrap(),
        ca.display()
    );

    let mut l = open(&verified).await;
    l.start_session(&session("tls"), "w").await.unwrap();
    l.write_batch(&Gen::default().batch(3, 3, 1, 1), "c1")
        .await
        .unwrap();
    let (without_tls, all) = tls_connections(&l).await;
    assert!(all >= 2, "the pool and the lock connection: {all}");
    assert_eq!(
        without_tls, 0,
        "every one of the {all} connections uses TLS"
    );
    l.finish_session(&end(dec!(1))).await.unwrap();
    assert_eq!(l.session("tls").await.unwrap().unwrap().trades, 3);
    l.close().await;

    // A certificate this CA did not sign.
    let (other_ca, _, _) = tls_identity();
    let other = dir.path().join("other.crt");
    std::fs::write(&other, other_ca).unwrap();
    let wrong = verified.replace(&ca.display().to_string(), &other.display().to_string());
    let err = refused(&wrong).await;
    let text = err.to_string();
    assert!(
        text.contains("TLS handshake refused") && text.contains("sslrootcert"),
        "{text}"
    );
    assert!(
        !err.is_transient(),
        "a certificate does not change on retry: {text}"
    );

    // TLS required of a server without it.
    let plain = format!(
        "{}?sslmode=require",
        Postgres::server().create_database("tls_required").unwrap()
    );
    let err = refused(&plain).await;
    let text = err.to_string();
    assert!(text.contains("TLS") && !err.is_transient(), "{text}");

    // Plain text when asked for.
    let url = format!("{}?sslmode=disable", server.url_for("tls"));
    let l = open(&url).await;
    let tls = fixture::scalar(
        &l,
        "SELECT COUNT(*) FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
    )
    .await;
    assert_eq!(tls, 0, "sslmode=disable connects in plain text");
    l.close().await;
}
