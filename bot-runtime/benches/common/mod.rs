//! Shared by the benchmarks: the repository root and the 1M-candle input.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use bot_runtime::types::Timestamp;

pub const COPIES: i64 = 23;
pub const MONTH_MS: i64 = 31 * 86_400_000;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Write the 1M-candle file (once) and return its path.
pub fn million_candle_file() -> PathBuf {
    let src = repo().join("../shared/data/market/BTC-PERP_1m_ftx_2022-01.csv");
    assert!(
        src.is_file(),
        "{} is missing: the benchmark needs ../shared",
        src.display()
    );
    let dir = repo().join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("BTC-PERP_1m_ftx_2022-01_x23.csv");
    if out.is_file() {
        return out;
    }
    let rows: Vec<String> = BufReader::new(std::fs::File::open(&src).unwrap())
        .lines()
        .skip(1)
        .map(|l| l.unwrap())
        .collect();
    let tmp = dir.join("tmp.csv");
    let mut w = BufWriter::new(std::fs::File::create(&tmp).unwrap());
    writeln!(w, "timestamp,open,high,low,close,volume").unwrap();
    for k in 0..COPIES {
        for r in &rows {
            let (ts, rest) = r.split_once(',').unwrap();
            let t = chrono::DateTime::parse_from_rfc3339(ts)
                .unwrap()
                .timestamp_millis()
                + k * MONTH_MS;
            writeln!(w, "{},{rest}", Timestamp(t).to_rfc3339()).unwrap();
        }
    }
    w.flush().unwrap();
    drop(w);
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// Wall time and peak RSS (KiB) of a child process.
pub fn run_measured(cmd: &mut Command) -> (f64, i64) {
    let t = Instant::now();
    let mut child = cmd.spawn().expect("spawn bot-runtime");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "bot-runtime failed"
    );
    let _ = child.try_wait();
    (secs, usage.ru_maxrss)
}
