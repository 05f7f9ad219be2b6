//! Tests of the ledger. One suite (`suite.rs`) runs on both backends: on
//! SQLite files and on a real PostgreSQL server (`paperbot-testkit`, one
//! server per test binary, one database per test). Backend-specific tests
//! (SQLite's WAL and schema upgrade, PostgreSQL's migration lock, outage,
//! cut lock connections, URL redaction) and the cross-backend comparison
//! follow in their own modules.

mod both;
mod fixture;
mod postgres_only;
mod sqlite_only;
mod suite;

/// Instantiate every suite body for one backend, as module `$backend`.
macro_rules! suite {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::suite;

            suite!(@tests $fixture;
                every_record_type_round_trips,
                read_records_feed_analytics_and_reports_like_the_engine,
                failed_batch_leaves_nothing_and_earlier_batches_stay,
                resume_returns_the_last_checkpoint_and_continues_numbering,
                a_retried_batch_after_a_lost_ack_is_not_duplicated,
                interrupt_makes_the_session_resumable_and_frees_its_lock,
                a_second_writer_is_refused_naming_the_holder,
                a_writer_whose_token_was_replaced_is_fenced,
                next_session_id_picks_the_smallest_free_run_number,
                sessions_are_listed_newest_first,
                reopening_keeps_every_row,
                batches_of_every_size_are_stored_completely,
                extreme_decimals_are_stored_exactly,
            );

            #[tokio::test]
            async fn the_writer_lock_dies_with_its_process() {
                // libtest names tests by module path without the crate.
                let path = module_path!();
                let test = format!(
                    "{}::the_writer_lock_dies_with_its_process",
                    path.split_once("::").map_or(path, |(_, rest)| rest)
                );
                suite::the_writer_lock_dies_with_its_process(&$fixture, &test).await;
            }
        }
    };
    (@tests $fixture:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                suite::$name(&$fixture).await;
            }
        )*
    };
}

suite!(sqlite, super::fixture::Sqlite::new());
suite!(postgres, super::fixture::Postgres::new());
