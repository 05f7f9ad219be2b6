//! The ledger test suite, one body per behaviour, run on every backend by
//! `suite!` in `mod.rs`. Bodies use only `ledger::open` and the
//! `LedgerStore` API, plus raw SQL where a test must do what no API call
//! can (e.g. take a session over behind a writer's back).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::fixture::{self, Fixture, open};
use crate::analytics::Analytics;
use crate::ledger::records::*;
use crate::ledger::sample::{Gen, MINUTE, T0, end, session};
use crate::ledger::{INTERRUPTED_PHASE, Ledger, LedgerError, LedgerStore, RUNNING_PHASE};
use crate::report::ReportWriter;
use crate::types::Timestamp;

/// `assert_eq!` plus equality of the Debug forms, which include each
/// Decimal's scale (`1.5 == 1.50` but they print differently).
pub(super) fn assert_exact<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T]) {
    assert_eq!(got, want);
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
}

/// Every record of `batches` in one batch, as `read_records` returns them
/// in total: outcomes by adjustment id, positions latest per symbol.
pub(super) fn concat(batches: &[LedgerBatch]) -> LedgerBatch {
    let mut all = LedgerBatch::default();
    let mut positions = BTreeMap::new();
    for b in batches {
        all.decisions.extend(b.decisions.iter().cloned());
        all.trades.extend(b.trades.iter().cloned());
        all.round_trips.extend(b.round_trips.iter().cloned());
        all.breaker_events.extend(b.breaker_events.iter().cloned());
        all.adjustments.extend(b.adjustments.iter().cloned());
        all.adjustment_outcomes
            .extend(b.adjustment_outcomes.iter().cloned());
        all.snapshots.extend(b.snapshots.iter().cloned());
        for p in &b.positions {
            positions.insert(p.symbol.clone(), p.clone());
        }
    }
    all.adjustment_outcomes.sort_by_key(|o| o.id);
    all.positions = positions.into_values().collect();
    all
}

/// Every batch `read_records` yields for session `id`.
pub(super) async fn read_all(l: &Ledger, id: &str, chunk: usize) -> Vec<LedgerBatch> {
    let mut out = Vec::new();
    l.read_records(id, chunk, &mut |b| {
        out.push(b);
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("read_records {id}: {e}"));
    out
}

fn assert_same_records(got: &LedgerBatch, want: &LedgerBatch) {
    assert_exact(&got.decisions, &want.decisions);
    assert_exact(&got.trades, &want.trades);
    assert_exact(&got.round_trips, &want.round_trips);
    assert_exact(&got.breaker_events, &want.breaker_events);
    assert_exact(&got.adjustments, &want.adjustments);
    assert_exact(&got.adjustment_outcomes, &want.adjustment_outcomes);
    assert_exact(&got.snapshots, &want.snapshots);
    assert_exact(&got.positions, &want.positions);
}

/// Two batches holding every record type: adjustments, a verdict on one of
/// them in the later batch, breaker events, a position that goes flat.
pub(super) fn every_kind(g: &mut Gen) -> [LedgerBatch; 2] {
    let mut b1 = g.batch(8, 7, 2, 2);
    b1.breaker_events.push(g.breaker_event());
    b1.adjustments.push(g.adjustment());
    b1.adjustments.push(g.adjustment());
    let mut b2 = g.batch(2, 2, 1, 1);
    b2.adjustment_outcomes.push(g.outcome(1, Outcome::Negative));
    b2.positions[0].quantity = dec!(0);
    b2.positions[0].opened_at = None;
    b2.breaker_events.push(g.breaker_event());
    [b1, b2]
}

/// Five large batches with every record type, the same for every call.
pub(super) fn workload() -> Vec<LedgerBatch> {
    let mut g = Gen::default();
    (0..5)
        .map(|i| {
            let mut b = g.batch(150, 120, 40, 9);
            b.breaker_events.push(g.breaker_event());
            b.adjustments.push(g.adjustment());
            if i > 0 {
                let id = g.adjustment_id - 1;
                b.adjustment_outcomes.push(g.outcome(id, Outcome::Neutral));
            }
            b
        })
        .collect()
}

/// On a handle writing session `id`: write `batches[from..]` (checkpoints
/// `c{from+1}`, ...), finish the session, and return its dump.
pub(super) async fn write_rest_and_finish(
    l: &mut Ledger,
    id: &str,
    batches: &[LedgerBatch],
    from: usize,
) -> String {
    for (i, b) in batches.iter().enumerate().skip(from) {
        l.write_batch(b, &format!("c{}", i + 1)).await.unwrap();
    }
    l.finish_session(&end(dec!(9876.54))).await.unwrap();
    l.dump_session(id).await.unwrap()
}

/// Write `batches` (checkpoints `c1`, `c2`, ...) as session `id` in one go
/// and finish it; returns the dump.
pub(super) async fn uninterrupted(url: &str, id: &str, batches: &[LedgerBatch]) -> String {
    let mut l = open(url).await;
    l.start_session(&session(id), "straight").await.unwrap();
    let dump = write_rest_and_finish(&mut l, id, batches, 0).await;
    l.close().await;
    dump
}

pub(super) async fn every_record_type_round_trips<F: Fixture>(fx: &F) {
    let mut l = open(&fx.fresh("roundtrip")).await;
    let id = "btc-sma";
    l.start_session(&session(id), "pod/btc-sma-0 pid 7")
        .await
        .unwrap();
    let mut g = Gen::default();
    let batches = every_kind(&mut g);
    for (i, b) in batches.iter().enumerate() {
        l.write_batch(b, &format!("{{\"batch\":{i}}}"))
            .await
            .unwrap();
    }
    let info = l.session(id).await.unwrap().unwrap();
    assert_eq!(info.phase, RUNNING_PHASE);
    assert_eq!(info.writer.as_deref(), Some("pod/btc-sma-0 pid 7"));
    assert!(info.heartbeat_at.is_some_and(|t| t > 0));
    assert_eq!((info.batches, info.trades), (2, 9));
    assert_eq!(info.last_batch_at, Some(batches[1].time));
    assert_eq!(info.cash, batches[1].cash);
    // Equity follows the last snapshot of the last batch that had one.
    assert_eq!(info.equity, batches[1].snapshots[0].equity);
    l.finish_session(&end(batches[1].cash)).await.unwrap();

    // The session row.
    let info = l.session(id).await.unwrap().unwrap();
    assert_eq!(info.name, "btc");
    assert_eq!(info.initial_cash.to_string(), "10000.00");
    assert_eq!(info.config_json, session(id).config_json);
    assert_eq!(info.started_at, Timestamp(T0));
    assert_eq!(info.phase, "Completed");
    assert_eq!(info.ended_at, Some(end(batches[1].cash).ended_at));
    assert_eq!(info.cash, batches[1].cash);
    assert_eq!(info.equity, end(batches[1].cash).equity);
    assert_eq!(info.summary_json.as_deref(), Some(r#"{"trades":2}"#));
    assert_eq!(info.writer, None, "no writer once ended");
    assert!(!info.is_unfinished());

    // Every record reads back exactly, whatever the chunk size.
    let want = concat(&batches);
    assert!(want.decisions.iter().any(|d| d.quantity.is_none()));
    assert!(want.trades.iter().any(|t| t.status == FillStatus::Failed));
    for chunk in [1, 3, 1000] {
        let got = read_all(&l, id, chunk).await;
        assert_same_records(&concat(&got), &want);
        assert_eq!(got.last().map(|b| b.cash), Some(info.cash));
        let largest = got.iter().map(|b| b.decisions.len()).max().unwrap_or(0);
        assert!(
            largest <= chunk,
            "chunk {chunk}: a batch holds {largest} decisions"
        );
    }

    // The dump: canonical rows, no wall-clock or writer columns.
    let dump = l.dump_session(id).await.unwrap();
    for table in [
        "autopilot_adjustments",
        "breaker_events",
        "decisions",
        "positions",
        "round_trips",
        "sessions",
        "snapshots",
        "trades",
    ] {
        assert!(
            dump.contains(&format!("== {table}: ")),
            "{table} missing:\n{dump}"
        );
    }
    for hidden in [
        "created_at",
        "writer",
        "heartbeat_at",
        "batch_seq",
        "checkpoint_json",
        "interrupted_at",
        "pod/btc-sma-0",
        "_sqlx_migrations",
    ] {
        assert!(!dump.contains(hidden), "{hidden} in dump:\n{dump}");
    }
    assert!(dump.contains(
        "== positions: session_id|symbol|quantity|cost_basis|last_price|opened_at|updated_at\n\
         \"btc-sma\"|\"BTCUSDT\"|\"0\"|\"997.15\"|\"46990.75\"|NULL|"
    ));
    // An adjustment without a verdict: exact decimals, JSON metrics, NULL verdict.
    let line = format!(
        concat!(
            r#""btc-sma"|2|{}|"stopLossPct"|"2.0"|"2.50"|"win rate 38% < 45%: widen the stop"|"#,
            r#""{{\"trades\":12,\"win_rate_pct\":\"55.50\",\"pnl\":\"-12.345\","#,
            r#"\"avg_return_pct\":\"0.10\",\"profit_factor\":null}}"|NULL|NULL|NULL"#,
            "\n"
        ),
        batches[0].adjustments[1].time.millis()
    );
    assert!(dump.contains(&line), "{line}\nnot in\n{dump}");
    let data_lines = dump.lines().filter(|l| !l.starts_with("== ")).count();
    assert_eq!(data_lines, 1 + 10 + 9 + 3 + 2 + 2 + 3 + 1);
    l.close().await;
}

pub(super) async fn read_records_feed_analytics_and_reports_like_the_engine<F: Fixture>(fx: &F) {
    let mut l = open(&fx.fresh("replay")).await;
    l.start_session(&session("replay"), "w").await.unwrap();
    let batches = workload();
    for b in &batches {
        l.write_batch(b, "{}").await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let feed = |batches: &[LedgerBatch], name: &str| {
        let mut analytics = Analytics::new(dec!(10000.00), 3_600_000);
        let mut report = ReportWriter::create(&dir.path().join(name), name).unwrap();
        for b in batches {
            analytics.on_batch(b);
            report.write_batch(b).unwrap();
        }
        // Dropping the writer flushes its CSV files.
        drop(report);
        format!("{analytics:?}")
    };
    let engine = feed(&batches, "engine");
    let replayed = feed(&read_all(&l, "replay", 97).await, "ledger");
    assert_eq!(engine, replayed);
    for csv in ["trades.csv", "round_trips.csv", "decisions.csv"] {
        let a = std::fs::read_to_string(dir.path().join("engine").join(csv)).unwrap();
        let b = std::fs::read_to_string(dir.path().join("ledger").join(csv)).unwrap();
        assert!(a.lines().count() > 100, "{csv} too small");
        assert_eq!(a, b, "{csv} differs");
    }
    l.close().await;
}

pub(super) async fn failed_batch_leaves_nothing_and_earlier_batches_stay<F: Fixture>(fx: &F) {
    let mut l = open(&fx.fresh("atomic")).await;
    let id = "atomic";
    l.start_session(&session(id), "w").await.unwrap();
    let mut g = Gen::default();
    let mut b1 = g.batch(100, 100, 30, 5);
    b1.adjustments.push(g.adjustment());
    l.write_batch(&b1, "c1").await.unwrap();
    let after_b1 = l.dump_session(id).await.unwrap();

    // Decisions, trades, round trips, breaker events go in, then the
    // adjustments hit a duplicate primary key: everything rolls back,
    // including the session's cash, checkpoint and the position change.
    let mut b2 = g.batch(70, 70, 20, 3);
    b2.breaker_events.push(g.breaker_event());
    let dup = g.adjustment();
    b2.adjustments.push(dup.clone());
    b2.adjustments.push(dup);
    b2.positions[0].quantity = dec!(5);
    b2.cash = dec!(1.23);
    let err = l.write_batch(&b2, "c2").await.unwrap_err();
    assert!(matches!(err, LedgerError::Database(_)), "{err}");
    assert!(
        !err.is_transient(),
        "a constraint violation is not transient: {err}"
    );
    assert_eq!(l.dump_session(id).await.unwrap(), after_b1);

    // An outcome for an adjustment that does not exist fails after all the
    // inserts of its batch, and also leaves nothing.
    let mut b3 = g.batch(10, 10, 5, 1);
    b3.adjustment_outcomes
        .push(g.outcome(99, Outcome::Positive));
    let err = l.write_batch(&b3, "c3").await.unwrap_err();
    assert!(
        matches!(err, LedgerError::UnknownAdjustment { id: 99, .. }),
        "{err}"
    );
    assert_eq!(l.dump_session(id).await.unwrap(), after_b1);
    let info = l.session(id).await.unwrap().unwrap();
    assert_eq!((info.batches, info.cash), (1, b1.cash));

    // The handle is still usable; store-assigned numbers and the batch count
    // continue without gaps (the failed batches consumed none).
    let mut g2 = Gen {
        decision_seq: 100,
        trade_seq: 100,
        adjustment_id: 1,
        minute: 10_000,
    };
    let b4 = g2.batch(5, 5, 4, 2);
    l.write_batch(&b4, "c4").await.unwrap();
    let all = concat(&read_all(&l, id, 1000).await);
    assert_eq!(all.round_trips.len(), 34);
    assert_eq!(all.snapshots.len(), 7);
    assert_eq!(all.decisions.len(), 105);
    let info = l.session(id).await.unwrap().unwrap();
    assert_eq!((info.batches, info.cash), (2, b4.cash));
    l.close().await;
}

pub(super) async fn resume_returns_the_last_checkpoint_and_continues_numbering<F: Fixture>(fx: &F) {
    let url = fx.fresh("resume");
    let batches = workload();
    let id = "resume";
    {
        let mut l = open(&url).await;
        l.start_session(&session(id), "first").await.unwrap();
        for (i, b) in batches[..3].iter().enumerate() {
            l.write_batch(b, &format!("c{}", i + 1)).await.unwrap();
        }
        // A crash: the handle goes away without finishing (its lock with it).
    }
    let mut l = open(&url).await;
    let found = l.find_unfinished("resume").await.unwrap().unwrap();
    assert_eq!(
        (found.id.as_str(), found.phase.as_str()),
        (id, RUNNING_PHASE)
    );
    assert_eq!(found.writer.as_deref(), Some("first"));
    let point = l.resume_session(id, "second").await.unwrap();
    assert_eq!(point.checkpoint.as_deref(), Some("c3"));
    assert_eq!(point.info.batches, 3);
    assert_eq!(point.info.cash, batches[2].cash);
    assert_eq!(point.info.writer.as_deref(), Some("second"));
    let resumed = write_rest_and_finish(&mut l, id, &batches, 3).await;
    assert_eq!(
        resumed,
        uninterrupted(&fx.fresh("resume_ref"), id, &batches).await
    );
    assert_eq!(l.find_unfinished("resume").await.unwrap(), None);
    let err = l.resume_session(id, "third").await.unwrap_err();
    assert!(matches!(err, LedgerError::SessionFinished { .. }), "{err}");
    let err = l.resume_session("nope", "third").await.unwrap_err();
    assert!(matches!(err, LedgerError::UnknownSession { .. }), "{err}");

    // A session that crashed before its first batch resumes from the start.
    l.start_session(&session("early"), "first").await.unwrap();
    drop(l);
    let mut l = open(&url).await;
    let point = l.resume_session("early", "second").await.unwrap();
    assert_eq!((point.checkpoint, point.info.batches), (None, 0));
    l.close().await;
}

pub(super) async fn a_retried_batch_after_a_lost_ack_is_not_duplicated<F: Fixture>(fx: &F) {
    let mut l = open(&fx.fresh("ack")).await;
    let batches = workload();
    let id = "ack";
    l.start_session(&session(id), "w").await.unwrap();
    l.write_batch(&batches[0], "c1").await.unwrap();
    l.lose_next_ack();
    let err = l.write_batch(&batches[1], "c2").await.unwrap_err();
    assert!(
        err.is_transient(),
        "a lost acknowledgement is transient: {err}"
    );
    // The commit did happen; the retry recognises batch 2 and writes nothing.
    assert_eq!(l.session(id).await.unwrap().unwrap().batches, 2);
    l.write_batch(&batches[1], "c2").await.unwrap();
    assert_eq!(l.session(id).await.unwrap().unwrap().batches, 2);
    let dump = write_rest_and_finish(&mut l, id, &batches, 2).await;
    assert_eq!(
        dump,
        uninterrupted(&fx.fresh("ack_ref"), id, &batches).await
    );
    l.close().await;
}

pub(super) async fn interrupt_makes_the_session_resumable_and_frees_its_lock<F: Fixture>(fx: &F) {
    let url = fx.fresh("interrupt");
    let mut a = open(&url).await;
    let mut b = open(&url).await;
    let id = "intr";
    let batches = workload();
    a.start_session(&session(id), "a").await.unwrap();
    a.write_batch(&batches[0], "c1").await.unwrap();
    a.interrupt_session(Timestamp(T0 + 7 * MINUTE))
        .await
        .unwrap();
    let info = a.session(id).await.unwrap().unwrap();
    assert_eq!(info.phase, INTERRUPTED_PHASE);
    assert!(info.is_unfinished());
    assert_eq!(
        a.find_unfinished("intr").await.unwrap().map(|s| s.id),
        Some(id.into())
    );
    // This handle is done with it ...
    let err = a.write_batch(&batches[1], "c2").await.unwrap_err();
    assert!(matches!(err, LedgerError::NotStarted), "{err}");
    // ... and another one resumes at once (the lock was released).
    let point = b.resume_session(id, "b").await.unwrap();
    assert_eq!(point.info.phase, RUNNING_PHASE);
    assert_eq!(point.checkpoint.as_deref(), Some("c1"));
    // Interrupting and resuming changes nothing the dump shows.
    let dump = write_rest_and_finish(&mut b, id, &batches, 1).await;
    assert_eq!(
        dump,
        uninterrupted(&fx.fresh("interrupt_ref"), id, &batches).await
    );
    a.close().await;
    b.close().await;
}

pub(super) async fn a_second_writer_is_refused_naming_the_holder<F: Fixture>(fx: &F) {
    let url = fx.fresh("second");
    let mut a = open(&url).await;
    let mut b = open(&url).await;
    let id = "held";
    let mut g = Gen::default();

    // Writing needs a started session.
    let err = a.write_batch(&g.batch(1, 1, 0, 0), "{}").await.unwrap_err();
    assert!(matches!(err, LedgerError::NotStarted), "{err}");
    let err = a.finish_session(&end(dec!(1))).await.unwrap_err();
    assert!(matches!(err, LedgerError::NotStarted), "{err}");

    a.start_session(&session(id), "pod/held-0 pid 7")
        .await
        .unwrap();
    let err = b.resume_session(id, "pod/held-0 pid 9").await.unwrap_err();
    match &err {
        LedgerError::LeaseHeld { session_id, holder } => {
            assert_eq!(
                (session_id.as_str(), holder.as_str()),
                (id, "pod/held-0 pid 7")
            );
        }
        e => panic!("expected LeaseHeld, got {e}"),
    }
    assert!(err.to_string().contains("pod/held-0 pid 7"), "{err}");
    assert!(!err.is_transient());
    let err = b.start_session(&session(id), "x").await.unwrap_err();
    assert!(matches!(err, LedgerError::SessionExists { .. }), "{err}");
    let err = a.start_session(&session("other"), "x").await.unwrap_err();
    assert!(matches!(err, LedgerError::AlreadyStarted { .. }), "{err}");
    let err = a.resume_session(id, "x").await.unwrap_err();
    assert!(matches!(err, LedgerError::AlreadyStarted { .. }), "{err}");

    // B failed without side effects: A writes on, B can write its own session.
    a.write_batch(&g.batch(3, 3, 1, 1), "c1").await.unwrap();
    b.start_session(&session("held-2"), "b").await.unwrap();
    b.finish_session(&end(dec!(1))).await.unwrap();

    // A session cannot end in a running phase.
    let mut bad = end(dec!(1));
    bad.phase = RUNNING_PHASE.into();
    let err = a.finish_session(&bad).await.unwrap_err();
    assert!(matches!(err, LedgerError::InvalidPhase { .. }), "{err}");
    a.finish_session(&end(dec!(1))).await.unwrap();
    let err = b.resume_session(id, "b").await.unwrap_err();
    assert!(matches!(err, LedgerError::SessionFinished { .. }), "{err}");
    a.close().await;
    b.close().await;
}

pub(super) async fn a_writer_whose_token_was_replaced_is_fenced<F: Fixture>(fx: &F) {
    let mut l = open(&fx.fresh("fence")).await;
    let id = "fence";
    let mut g = Gen::default();
    l.start_session(&session(id), "w").await.unwrap();
    l.write_batch(&g.batch(4, 4, 1, 1), "c1").await.unwrap();
    let before = l.dump_session(id).await.unwrap();
    // Another writer took the session over without this handle's lock (as
    // after a lock lost with its connection): the token check refuses.
    let changed = fixture::exec(
        &l,
        "UPDATE sessions SET writer_token = 'other' WHERE id = 'fence'",
    )
    .await
    .unwrap();
    assert_eq!(changed, 1);
    let err = l.write_batch(&g.batch(4, 4, 1, 1), "c2").await.unwrap_err();
    assert!(matches!(err, LedgerError::Fenced { .. }), "{err}");
    assert!(!err.is_transient());
    assert_eq!(l.dump_session(id).await.unwrap(), before);
    let err = l.finish_session(&end(dec!(1))).await.unwrap_err();
    assert!(matches!(err, LedgerError::Fenced { .. }), "{err}");
    assert_eq!(l.session(id).await.unwrap().unwrap().phase, RUNNING_PHASE);
    l.close().await;
}

pub(super) async fn next_session_id_picks_the_smallest_free_run_number<F: Fixture>(fx: &F) {
    let mut l = open(&fx.fresh("ids")).await;
    assert_eq!(l.next_session_id("btc").await.unwrap(), "btc");
    for id in ["btc", "btc-2"] {
        l.start_session(&session(id), "w").await.unwrap();
        l.finish_session(&end(dec!(1))).await.unwrap();
    }
    assert_eq!(l.next_session_id("btc").await.unwrap(), "btc-3");
    // Unrelated ids sharing the prefix do not count; gaps are reused.
    for id in ["btc-4", "btc-x", "btcusd", "btc_5"] {
        l.start_session(&session(id), "w").await.unwrap();
        l.finish_session(&end(dec!(1))).await.unwrap();
    }
    assert_eq!(l.next_session_id("btc").await.unwrap(), "btc-3");
    assert_eq!(l.next_session_id("btc-2").await.unwrap(), "btc-2-2");
    assert_eq!(l.next_session_id("bt").await.unwrap(), "bt");
    assert_eq!(l.next_session_id("eth").await.unwrap(), "eth");
    l.close().await;
}

pub(super) async fn sessions_are_listed_newest_first<F: Fixture>(fx: &F) {
    let mut l = open(&fx.fresh("list")).await;
    assert!(l.list_sessions().await.unwrap().is_empty());
    assert_eq!(l.session("none").await.unwrap(), None);
    let mut g = Gen::default();
    for id in ["eth", "btc", "btc-2"] {
        l.start_session(&session(id), &format!("writer of {id}"))
            .await
            .unwrap();
        l.write_batch(&g.batch(2, 3, 1, 1), "{}").await.unwrap();
        if id == "btc-2" {
            l.interrupt_session(Timestamp(T0)).await.unwrap();
        } else {
            l.finish_session(&end(dec!(5))).await.unwrap();
        }
        // created_at is in milliseconds: keep the creation order visible.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let all = l.list_sessions().await.unwrap();
    let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["btc-2", "btc", "eth"]);
    assert_eq!(all[0].phase, INTERRUPTED_PHASE);
    assert_eq!(all[0].writer.as_deref(), Some("writer of btc-2"));
    assert!(all.iter().all(|s| s.trades == 3 && s.batches == 1));
    assert_eq!(all[1].writer, None);
    assert_eq!(
        l.find_unfinished("btc").await.unwrap().map(|s| s.id),
        Some("btc-2".into())
    );
    assert_eq!(l.find_unfinished("eth").await.unwrap(), None);
    assert_eq!(l.session("btc").await.unwrap().as_ref(), all.get(1));
    let err = l
        .read_records("none", 10, &mut |_| Ok(()))
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::UnknownSession { .. }), "{err}");
    l.close().await;
}

pub(super) async fn reopening_keeps_every_row<F: Fixture>(fx: &F) {
    let url = fx.fresh("reopen");
    let before = {
        let mut l = open(&url).await;
        l.start_session(&session("reopen"), "w").await.unwrap();
        l.write_batch(&Gen::default().batch(3, 3, 1, 1), "c1")
            .await
            .unwrap();
        let dump = l.dump_session("reopen").await.unwrap();
        l.close().await;
        dump
    };
    for _ in 0..2 {
        let l = open(&url).await;
        assert_eq!(l.dump_session("reopen").await.unwrap(), before);
        l.close().await;
    }
}

pub(super) async fn batches_of_every_size_are_stored_completely<F: Fixture>(fx: &F) {
    // Every chunk shape (256, 128, ..., 1) and combinations of them.
    let mut l = open(&fx.fresh("sizes")).await;
    l.start_session(&session("sizes"), "w").await.unwrap();
    let mut g = Gen::default();
    let mut total = 0;
    for n in [0usize, 1, 2, 3, 63, 64, 65, 255, 256, 257, 1000] {
        l.write_batch(&g.batch(n, n, n, n), "{}").await.unwrap();
        total += n as u64;
    }
    let all = concat(&read_all(&l, "sizes", 4096).await);
    let seqs: Vec<u64> = all.decisions.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    assert_eq!(all.trades.len() as u64, total);
    assert_eq!(all.round_trips.len() as u64, total);
    assert_eq!(all.snapshots.len() as u64, total);
    l.close().await;
}

/// Exact decimals at the edges of `Decimal`'s range keep their value and
/// scale; negative zero is stored as zero.
pub(super) async fn extreme_decimals_are_stored_exactly<F: Fixture>(fx: &F) {
    let mut l = open(&fx.fresh("extreme")).await;
    l.start_session(&session("extreme"), "w").await.unwrap();
    let mut g = Gen::default();
    let mut b = g.batch(0, 6, 0, 0);
    let mut neg_zero = Decimal::new(0, 3);
    neg_zero.set_sign_negative(true);
    let values = [
        Decimal::MAX,
        Decimal::MIN,
        Decimal::new(1, 28),
        Decimal::new(-1_000_000_000_000, 4),
        dec!(0.10),
        dec!(123456789012345678.9012345678),
    ];
    for (t, v) in b.trades.iter_mut().zip(values) {
        t.fill_price = v;
        t.realized_pnl = neg_zero;
    }
    l.write_batch(&b, "{}").await.unwrap();
    let got = concat(&read_all(&l, "extreme", 100).await);
    let prices: Vec<String> = got
        .trades
        .iter()
        .map(|t| t.fill_price.to_string())
        .collect();
    let want: Vec<String> = values.iter().map(Decimal::to_string).collect();
    assert_eq!(prices, want);
    assert!(
        got.trades
            .iter()
            .all(|t| t.realized_pnl.to_string() == "0.000")
    );
    l.close().await;
}

/// Environment variable that turns the lock test into its child process:
/// `URL\tSESSION`.
const LOCK_CHILD_ENV: &str = "PAPERBOT_LEDGER_LOCK_CHILD";

/// What the lock child prints once it holds the lock.
const LOCKED_MARKER: &str = "paperbot-lock-child: LOCKED";

/// Kills the child when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A lock held by another PROCESS refuses a second writer, naming it; after
/// `kill -9` of that process the session resumes at once. `test_name` is
/// this test's libtest name: the test binary re-runs it as the child.
pub(super) async fn the_writer_lock_dies_with_its_process<F: Fixture>(fx: &F, test_name: &str) {
    if let Ok(spec) = std::env::var(LOCK_CHILD_ENV) {
        return lock_child(&spec).await;
    }
    let url = fx.fresh("process");
    let id = "proc";
    let mut l = open(&url).await;
    l.start_session(&session(id), "parent").await.unwrap();
    l.write_batch(&Gen::default().batch(2, 2, 1, 1), "c1")
        .await
        .unwrap();
    drop(l); // crash: the session stays Running, its lock goes

    let exe = std::env::current_exe().unwrap();
    let mut child = KillOnDrop(
        Command::new(exe)
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(LOCK_CHILD_ENV, format!("{url}\t{id}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let stdout = child.0.stdout.take().unwrap();
    // libtest prints `test NAME ... ` before the test's own output, on the
    // same line: look for the marker anywhere in a line.
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains(LOCKED_MARKER))
    });
    let ready = match tokio::time::timeout(std::time::Duration::from_secs(120), ready).await {
        Ok(done) => done.unwrap(),
        Err(_) => false,
    };
    if !ready {
        let _ = child.0.kill();
        let out = child.0.stderr.take().map(std::io::read_to_string);
        panic!("the lock child did not take the lock within 120 s: {out:?}");
    }

    let mut l = open(&url).await;
    let err = l.resume_session(id, "parent again").await.unwrap_err();
    let holder = format!("lock child pid {pid}");
    match &err {
        LedgerError::LeaseHeld { holder: h, .. } => assert_eq!(h, &holder),
        e => panic!("expected LeaseHeld naming {holder}, got {e}"),
    }

    // kill -9: no clean-up code runs in the child.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let mut attempts = 1;
    let point = loop {
        match l.resume_session(id, "parent again").await {
            Ok(point) => break point,
            // PostgreSQL ends the dead client's session (and its lock) when
            // it notices the closed socket, a moment after the kill.
            Err(LedgerError::LeaseHeld { .. }) if F::NAME == "postgres" && attempts < 200 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            Err(e) => panic!("resume after kill -9 (attempt {attempts}): {e}"),
        }
    };
    println!("{}: resumed after kill -9 on attempt {attempts}", F::NAME);
    if F::NAME == "sqlite" {
        assert_eq!(
            attempts, 1,
            "an flock is released when its process is reaped"
        );
    }
    assert_eq!(point.checkpoint.as_deref(), Some("c1"));
    assert_eq!(point.info.writer.as_deref(), Some("parent again"));
    l.finish_session(&end(dec!(1))).await.unwrap();
    l.close().await;
}

/// The child: resume the session, say so, and hold it until killed.
async fn lock_child(spec: &str) {
    let (url, id) = spec
        .split_once('\t')
        .unwrap_or_else(|| panic!("{LOCK_CHILD_ENV} must be URL<TAB>SESSION, got {spec:?}"));
    let mut l = open(url).await;
    let writer = format!("lock child pid {}", std::process::id());
    l.resume_session(id, &writer).await.unwrap();
    println!("{LOCKED_MARKER}");
    use std::io::Write as _;
    std::io::stdout().flush().unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
    panic!("the lock child was not killed within 600 s");
}
