//! `report.html`: the report as ONE self-contained HTML file for sharing —
//! the summary figures, the benchmark, the breakdowns (per symbol, per exit
//! reason, per day) and every chart embedded as a `data:image/png;base64,…`
//! URI. No network: no external stylesheet, script, font or image; the
//! styles are inline in a `<style>` element.
//!
//! Every text taken from the session (names, symbols, exit reasons, figures)
//! is escaped with the `html-escape` crate (text content and double-quoted
//! attributes), so a session named `<script>` shows as text.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use html_escape::{encode_double_quoted_attribute, encode_text};
use rust_decimal::Decimal;

use crate::analytics::Summary;
use crate::report::{ReportError, fmt_money, summary_rows};

fn dec(d: Decimal) -> String {
    d.normalize().to_string()
}

/// One table: a caption, a header and rows of cells (escaped when written).
fn table(out: &mut String, caption: &str, header: &[&str], rows: &[Vec<String>]) {
    let _ = write!(
        out,
        "<table>\n<caption>{}</caption>\n<thead><tr>",
        encode_text(caption)
    );
    for h in header {
        let _ = write!(out, "<th>{}</th>", encode_text(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", encode_text(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0 2em}\
caption{text-align:left;font-weight:bold;font-size:1.1em;padding:.3em 0}\
th,td{border:1px solid #ccc;padding:.25em .6em}\
td{text-align:right}td:first-child{text-align:left}\
th{background:#f2f2f2}img{max-width:100%;border:1px solid #ddd;margin:.5em 0 1.5em}";

/// Builds the HTML text of the report: `title` / `subtitle` head the page,
/// `charts` are (caption, PNG bytes) embedded in order.
pub fn report_html(
    summary: &Summary,
    title: &str,
    subtitle: &str,
    charts: &[(String, Vec<u8>)],
) -> String {
    let currency = if summary.currency.trim().is_empty() {
        "quote".to_owned()
    } else {
        summary.currency.trim().to_owned()
    };
    let money = |d: Decimal| fmt_money(d, &currency);
    let mut out = String::with_capacity(
        4096 + charts
            .iter()
            .map(|c| c.1.len() * 4 / 3 + 200)
            .sum::<usize>(),
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{t}</h1>\n<p>{s}</p>\n",
        t = encode_text(title),
        s = encode_text(subtitle),
    );

    let rows: Vec<Vec<String>> = summary_rows(summary, &currency)
        .into_iter()
        .map(|(k, v)| vec![k.to_owned(), v])
        .collect();
    table(
        &mut out,
        "Summary",
        &["Metric", &format!("Value (money in {currency})")],
        &rows,
    );

    let f = &summary.figures;
    if let Some(b) = &f.benchmark {
        let rows: Vec<Vec<String>> = b
            .legs
            .iter()
            .map(|l| {
                let t = |x: Option<crate::types::Timestamp>| {
                    x.map(|t| t.to_string()).unwrap_or_default()
                };
                let p = |x: Option<Decimal>| x.map(dec).unwrap_or_default();
                vec![
                    l.symbol.clone(),
                    t(l.entry_time),
                    p(l.entry_price),
                    t(l.exit_time),
                    p(l.exit_price),
                    dec(l.quantity),
                    money(l.final_value),
                ]
            })
            .collect();
        let caption = format!(
            "Benchmark: buy and hold, equal-weighted, fee {} % — final equity {}, return {} %",
            dec(b.fee_rate_pct),
            money(b.final_equity),
            crate::report::fmt_dp(b.return_pct, 2)
        );
        table(
            &mut out,
            &caption,
            &[
                "Symbol",
                "Entry time",
                "Entry price",
                "Exit time",
                "Exit price",
                "Quantity",
                "Final value",
            ],
            &rows,
        );
    }
    let rows: Vec<Vec<String>> = f
        .by_symbol
        .iter()
        .map(|r| r.cells(money).to_vec())
        .collect();
    table(
        &mut out,
        "By symbol",
        &[
            "Symbol",
            "Round trips",
            "Wins",
            "Losses",
            "Win rate %",
            "Realized P&L",
            "Fees",
            "Fills",
            "Still open",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = f
        .by_exit_reason
        .iter()
        .map(|r| r.cells(money).to_vec())
        .collect();
    table(
        &mut out,
        "By exit reason",
        &[
            "Exit reason",
            "Round trips",
            "Wins",
            "Losses",
            "Win rate %",
            "P&L",
            "Avg P&L",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = f.daily.iter().map(|r| r.cells(money).to_vec()).collect();
    table(
        &mut out,
        "Daily (UTC)",
        &[
            "Date",
            "Start equity",
            "End equity",
            "P&L",
            "Return %",
            "Fills",
            "Round trips",
        ],
        &rows,
    );

    for (caption, png) in charts {
        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
        let _ = write!(
            out,
            "<h2>{c}</h2>\n<img alt=\"{a}\" src=\"data:image/png;base64,{b64}\">\n",
            c = encode_text(caption),
            a = encode_double_quoted_attribute(caption),
        );
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Writes [`report_html`] to `path`, reading each chart's PNG from its path.
///
/// # Errors
/// [`ReportError::Io`] naming the PNG that cannot be read or the HTML file
/// that cannot be written.
pub fn write_report_html(
    path: &Path,
    summary: &Summary,
    title: &str,
    subtitle: &str,
    charts: &[(String, PathBuf)],
) -> Result<(), ReportError> {
    let mut pngs = Vec::with_capacity(charts.len());
    for (caption, p) in charts {
        let bytes = fs::read(p).map_err(|source| ReportError::Io {
            path: p.clone(),
            source,
        })?;
        pngs.push((caption.clone(), bytes));
    }
    let html = report_html(summary, title, subtitle, &pngs);
    fs::write(path, html).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::Analytics;
    use crate::analytics::test_records::*;
    use crate::ledger::records::LedgerBatch;
    use rust_decimal_macros::dec;

    #[test]
    fn markup_in_names_is_escaped_and_every_chart_is_embedded() {
        let mut a = Analytics::new(dec!(10000), HOUR);
        a.set_identity(crate::analytics::SessionIdentity {
            session_id: "<script>alert(1)</script>".into(),
            name: "<script>".into(),
            strategy: "a&b".into(),
            symbols: vec!["<b>X</b>".into()],
            currency: "USD".into(),
        });
        let mut rt = round_trip(dec!(5));
        rt.symbol = "<img src=x onerror=alert(1)>".into();
        a.on_batch(&LedgerBatch {
            round_trips: vec![rt],
            ..Default::default()
        });
        let s = a.summary(
            &crate::runner::initial_state(dec!(10000), Some(crate::types::Timestamp(T0))),
            "Completed",
        );
        let (title, subtitle) = crate::report::chart_titles(&s, "fallback");
        let charts = vec![
            ("Equity \"quoted\" <x>".to_owned(), vec![1u8, 2, 3]),
            ("Price: <b>X</b>".to_owned(), vec![4u8, 5]),
        ];
        let html = report_html(&s, &title, &subtitle, &charts);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; · a&amp;b"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("alt=\"Equity &quot;quoted&quot; &lt;x&gt;\""));
        // base64 of [1, 2, 3] is AQID, of [4, 5] BAU=.
        assert!(html.contains("src=\"data:image/png;base64,AQID\""));
        assert!(html.contains("src=\"data:image/png;base64,BAU=\""));
        assert_eq!(html.matches("<img ").count(), 2);
        assert!(!html.contains("http://") && !html.contains("https://"));
        for caption in ["Summary", "By symbol", "By exit reason", "Daily (UTC)"] {
            assert!(html.contains(&format!("<caption>{caption}")), "{caption}");
        }
    }
}
