//! The report's charts and `report.html`, end to end: `bot-runtime run` on
//! real candle files from `shared/data/market` (1m, 5m, 1h, 4h and a 1d
//! file made from the 1h one; one symbol and two; a BTC-quoted pair; a run
//! with no trade), then the PNGs decoded and the HTML checked.

mod common;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use common::{bin, example, shared_data, text};

/// The first `rows` data rows of shared file `name`, copied into `dir`.
fn slice(dir: &Path, name: &str, rows: usize) -> PathBuf {
    let src = std::fs::read_to_string(shared_data(name))
        .unwrap_or_else(|e| panic!("{}: {e}", shared_data(name).display()));
    let out: Vec<&str> = src.lines().take(rows + 1).collect();
    let path = dir.join(name);
    std::fs::write(&path, out.join("\n") + "\n").unwrap();
    path
}

/// A daily candle file built from an hourly one (UTC days; open of the
/// first hour, max high, min low, close of the last hour, summed volume).
fn daily_from_hourly(dir: &Path, name: &str) -> PathBuf {
    let src = std::fs::read_to_string(shared_data(name)).unwrap();
    let mut days: Vec<(String, [f64; 5], String, String)> = Vec::new();
    for line in src.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let day = f[0][..10].to_owned();
        let v: Vec<f64> = f[1..6].iter().map(|x| x.parse().unwrap()).collect();
        match days.last_mut() {
            Some((d, agg, _, close)) if *d == day => {
                agg[1] = agg[1].max(v[1]);
                agg[2] = agg[2].min(v[2]);
                agg[4] += v[4];
                *close = f[4].to_owned();
            }
            _ => days.push((
                day,
                [v[0], v[1], v[2], v[3], v[4]],
                f[1].to_owned(),
                f[4].to_owned(),
            )),
        }
    }
    // Decimal text: the open and close as in the source, high/low from f64
    // (the source has at most 8 places; {:.8} keeps them exact enough for a
    // chart and valid for the loader).
    let mut out = String::from("timestamp,open,high,low,close,volume\n");
    for (day, agg, open, close) in &days {
        out.push_str(&format!(
            "{day}T00:00:00Z,{open},{:.8},{:.8},{close},{:.8}\n",
            agg[1], agg[2], agg[4]
        ));
    }
    let path = dir.join("BTC-USD_1d_from_1h.csv");
    std::fs::write(&path, out).unwrap();
    assert!(days.len() > 300, "{} days", days.len());
    path
}

/// The quickstart manifest on `files` (symbol, path), money in `currency`,
/// the priceFeed breaker's data-gap limit `max_gap`.
fn manifest(
    dir: &Path,
    name: &str,
    currency: &str,
    files: &[(&str, &Path)],
    max_gap: &str,
) -> PathBuf {
    let q = std::fs::read_to_string(example("quickstart.yaml")).unwrap();
    let symbols = files.iter().map(|f| f.0).collect::<Vec<_>>().join(", ");
    let mut list = String::new();
    for (s, p) in files {
        list.push_str(&format!(
            "        - symbol: {s}\n          path: {}\n",
            p.display()
        ));
    }
    let start = q.find("      files:\n").unwrap() + "      files:\n".len();
    let end = q[start..].find("  execution:").unwrap() + start;
    let mut text = format!("{}{list}{}", &q[..start], &q[end..]);
    for (from, to) in [
        ("name: quickstart", format!("name: {name}")),
        ("baseCurrency: USD", format!("baseCurrency: {currency}")),
        // A BTC account holds 10 BTC, not 100,000.
        (
            "initialBalance: \"100000\"",
            (if currency == "BTC" {
                "initialBalance: \"10\""
            } else {
                "initialBalance: \"100000\""
            })
            .to_owned(),
        ),
        (
            "allocation: \"50000\"",
            (if currency == "BTC" {
                "allocation: \"5\""
            } else {
                "allocation: \"50000\""
            })
            .to_owned(),
        ),
        ("allow: [BTC-USD, LTC-USD]", format!("allow: [{symbols}]")),
        (
            "symbols: [BTC-USD, LTC-USD]",
            format!("symbols: [{symbols}]"),
        ),
        ("maxDataGap: \"10m\"", format!("maxDataGap: \"{max_gap}\"")),
    ] {
        assert!(text.contains(from), "quickstart.yaml changed shape: {from}");
        text = text.replace(from, &to);
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the session; returns its report directory.
fn run(dir: &Path, manifest: &Path, name: &str) -> PathBuf {
    let reports = dir.join("reports");
    let out = bin()
        .args(["run", "--no-progress", "-f"])
        .arg(manifest)
        .arg("--ledger")
        .arg(dir.join(format!("{name}.db")))
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .expect("bot-runtime starts");
    assert!(
        out.status.success(),
        "run {name} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    reports.join(name)
}

/// Decodes a PNG: width, height and its RGB pixels.
fn decode(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = png::Decoder::new(std::io::BufReader::new(f))
        .read_info()
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("{}: colour type {other:?}", path.display()),
    };
    let px = buf[..info.buffer_size()]
        .chunks(step)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, px)
}

/// The chart is 1200 × 600 and drawn on: many colours, and a good share of
/// pixels that are not the white background.
fn assert_drawn(path: &Path) {
    let (w, h, px) = decode(path);
    assert_eq!((w, h), (1200, 600), "{}", path.display());
    let colours: HashSet<[u8; 3]> = px.iter().copied().collect();
    let ink = px.iter().filter(|p| **p != [255, 255, 255]).count();
    assert!(
        colours.len() >= 20,
        "{}: {} colours",
        path.display(),
        colours.len()
    );
    assert!(
        ink * 100 >= px.len() * 3,
        "{}: {ink} non-white pixels",
        path.display()
    );
}

/// Green ▲ entry markers: pixels of exactly the marker green.
fn green_pixels(path: &Path) -> usize {
    let (_, _, px) = decode(path);
    px.iter().filter(|p| **p == [0, 150, 60]).count()
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// report.html: one file, no network, every table, one image per chart.
fn assert_html(dir: &Path, charts: usize) -> String {
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for bad in ["http://", "https://", "<link", "<script", "@import", "url("] {
        assert!(!html.contains(bad), "report.html contains {bad:?}");
    }
    let imgs = html.matches("<img ").count();
    assert_eq!(imgs, charts, "one <img> per chart");
    assert_eq!(html.matches("src=\"").count(), charts);
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), charts);
    for caption in ["Summary", "By symbol", "By exit reason", "Daily (UTC)"] {
        assert!(
            html.contains(&format!("<caption>{caption}")),
            "no {caption} table"
        );
    }
    html
}

/// name, currency, (symbol, file)s, data-gap limit, whether it trades.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a Path)>, &'a str, bool);

#[test]
fn charts_render_for_1m_5m_1h_4h_and_1d_data() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let m1 = slice(d, "BTC-USD_1m_alpaca_2021-01-01_2021-01-04.csv", 1500);
    let m5 = slice(d, "ETH-BTC_5m_bittrex_2018-01-10_2018-01-30.csv", 2000);
    let h1 = slice(d, "BTC-USD_1h_alpaca_2021.csv", 1500);
    let h4a = slice(d, "BTC-USDT_4h_binance_2023-12-30_2024-03-22.csv", 500);
    let h4b = slice(d, "ETH-USDT_4h_binance_2023-12-30_2024-03-22.csv", 500);
    let d1 = daily_from_hourly(d, "BTC-USD_1h_alpaca_2021.csv");

    let cases: Vec<Case> = vec![
        ("one-minute", "USD", vec![("BTC-USD", &m1)], "10m", true),
        ("btc-quoted", "BTC", vec![("ETH-BTC", &m5)], "30m", true),
        ("hourly", "USD", vec![("BTC-USD", &h1)], "6h", true),
        // 4-hour candles against a 10-minute data-gap limit: the priceFeed
        // breaker is open all along, so nothing trades.
        (
            "four-hour-no-trades",
            "USD",
            vec![("BTC-USDT", &h4a), ("ETH-USDT", &h4b)],
            "10m",
            false,
        ),
        ("daily", "USD", vec![("BTC-USD", &d1)], "3d", true),
    ];
    for (name, currency, files, gap, trades) in cases {
        let m = manifest(d, name, currency, &files, gap);
        let dir = run(d, &m, name);
        let s = summary(&dir);
        let fills = s["fills"].as_u64().unwrap();
        assert_eq!(fills > 0, trades, "{name}: {fills} fills");
        assert_drawn(&dir.join("equity.png"));
        for (symbol, _) in &files {
            let p = dir.join(format!("price_{symbol}.png"));
            assert_drawn(&p);
            if !trades {
                assert_eq!(green_pixels(&p), 0, "{name}: no trade, no marker");
            }
        }
        if trades {
            let p = dir.join(format!("price_{}.png", files[0].0));
            assert!(green_pixels(&p) > 50, "{name}: entry markers drawn");
        }
        let html = assert_html(&dir, 1 + files.len());
        assert!(html.contains(&format!("<h1>{name}")), "{name}: title");
    }
}

#[test]
fn a_report_rebuilt_with_the_candle_files_has_the_same_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let btc = slice(d, "BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv", 1200);
    let ltc = slice(d, "LTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv", 1200);
    let m = manifest(
        d,
        "rebuilt",
        "USD",
        &[("BTC-USD", &btc), ("LTC-USD", &ltc)],
        "10m",
    );
    let dir = run(d, &m, "rebuilt");
    assert!(summary(&dir)["fills"].as_u64().unwrap() > 0);
    let report = |out: &Path, data: &[String]| {
        let mut cmd = bin();
        cmd.args(["report", "--session", "rebuilt", "--out"])
            .arg(out)
            .arg("--ledger")
            .arg(d.join("rebuilt.db"));
        if !data.is_empty() {
            cmd.arg("--data").args(data);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    };
    let with = d.join("with-data");
    report(
        &with,
        &[
            format!("BTC-USD={}", btc.display()),
            format!("LTC-USD={}", ltc.display()),
        ],
    );
    let without = d.join("without-data");
    report(&without, &[]);
    for f in [
        "equity.png",
        "price_BTC-USD.png",
        "price_LTC-USD.png",
        "report.html",
        "summary.json",
        "trades.csv",
    ] {
        let run = std::fs::read(dir.join(f)).unwrap();
        assert!(
            run == std::fs::read(with.join(f)).unwrap(),
            "{f}: the run's and the one rebuilt with --data differ"
        );
    }
    // Without the candles the price charts draw the recorded prices.
    for f in ["price_BTC-USD.png", "price_LTC-USD.png"] {
        assert_drawn(&without.join(f));
        assert!(std::fs::read(dir.join(f)).unwrap() != std::fs::read(without.join(f)).unwrap());
    }
    assert_eq!(
        std::fs::read(dir.join("summary.json")).unwrap(),
        std::fs::read(without.join("summary.json")).unwrap()
    );
}
