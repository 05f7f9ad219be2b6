//! Merging several per-symbol candle streams into one time-ordered feed.

use crate::types::{Candle, SymbolId, Timestamp};

use super::csv::DataError;

/// Candles of several sources in `(open_time, symbol id)` order.
///
/// Each source must already be in time order (a [`CandleReader`](super::CandleReader)
/// checks that). The feed keeps one peeked candle per source and picks the
/// smallest by a linear scan: O(k) per candle for k sources, which beats a heap
/// for the k = 1–50 files a session replays, and allocates nothing per candle.
/// Ties on `(open_time, symbol)` go to the source listed first.
///
/// The first error from any source is yielded and ends the feed.
#[derive(Debug)]
pub struct MergedFeed<I> {
    sources: Vec<I>,
    /// Peeked head per source; `None` once the source is exhausted or not yet read.
    heads: Vec<Option<Candle>>,
    /// Sources whose next head must be read before the next pick.
    pending: Vec<usize>,
    done: bool,
}

impl<I> MergedFeed<I>
where
    I: Iterator<Item = Result<Candle, DataError>>,
{
    /// Merge `sources`; nothing is read until the first `next()`.
    pub fn new(sources: Vec<I>) -> Self {
        let n = sources.len();
        Self {
            sources,
            heads: vec![None; n],
            // Popped from the back: the first source is read first.
            pending: (0..n).rev().collect(),
            done: false,
        }
    }
}

impl<I> Iterator for MergedFeed<I>
where
    I: Iterator<Item = Result<Candle, DataError>>,
{
    type Item = Result<Candle, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        while let Some(i) = self.pending.pop() {
            match self.sources[i].next() {
                Some(Ok(c)) => self.heads[i] = Some(c),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => self.heads[i] = None,
            }
        }
        let mut best: Option<(usize, (Timestamp, SymbolId))> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if let Some(c) = h {
                let key = (c.open_time, c.symbol);
                if best.is_none_or(|(_, k)| key < k) {
                    best = Some((i, key));
                }
            }
        }
        match best {
            Some((i, _)) => {
                self.pending.push(i);
                self.heads[i].take().map(Ok)
            }
            None => {
                self.done = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rust_decimal::Decimal;

    use super::*;
    use crate::market::{CandleReader, scan_candle_file};

    fn candle(sym: u16, minute: i64) -> Candle {
        Candle {
            symbol: SymbolId(sym),
            open_time: Timestamp(minute * 60_000),
            interval_ms: 60_000,
            open: Decimal::ONE,
            high: Decimal::ONE,
            low: Decimal::ONE,
            close: Decimal::ONE,
            volume: Decimal::ZERO,
        }
    }

    fn source(sym: u16, minutes: &[i64]) -> std::vec::IntoIter<Result<Candle, DataError>> {
        minutes
            .iter()
            .map(|&m| Ok(candle(sym, m)))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn keys(feed: impl Iterator<Item = Result<Candle, DataError>>) -> Vec<(i64, u16)> {
        feed.map(|c| {
            let c = c.unwrap();
            (c.open_time.0 / 60_000, c.symbol.0)
        })
        .collect()
    }

    #[test]
    fn orders_by_time_then_symbol_across_gaps() {
        // Symbol 1 is listed first and has different gaps than symbol 0.
        let feed = MergedFeed::new(vec![source(1, &[0, 1, 4, 5]), source(0, &[0, 2, 3, 5, 9])]);
        assert_eq!(
            keys(feed),
            [
                (0, 0),
                (0, 1),
                (1, 1),
                (2, 0),
                (3, 0),
                (4, 1),
                (5, 0),
                (5, 1),
                (9, 0)
            ]
        );
    }

    #[test]
    fn empty_inputs() {
        assert_eq!(
            keys(MergedFeed::new(Vec::<std::vec::IntoIter<_>>::new())),
            []
        );
        assert_eq!(
            keys(MergedFeed::new(vec![source(0, &[]), source(1, &[2])])),
            [(2, 1)]
        );
    }

    #[test]
    fn first_error_ends_the_feed() {
        let err = DataError {
            file: PathBuf::from("b.csv"),
            line: 4,
            reason: "boom".into(),
        };
        let bad = vec![Ok(candle(1, 0)), Err(err.clone()), Ok(candle(1, 7))].into_iter();
        let mut feed = MergedFeed::new(vec![source(0, &[0, 1, 2, 3]), bad]);
        assert_eq!(feed.next().unwrap().unwrap(), candle(0, 0));
        assert_eq!(feed.next().unwrap().unwrap(), candle(1, 0));
        // Taking symbol 1's head makes the feed read its next item: the error.
        assert_eq!(feed.next().unwrap().unwrap_err(), err);
        assert!(feed.next().is_none());
        assert!(feed.next().is_none());
    }

    #[test]
    fn merges_two_real_files_with_different_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, minutes: &[u32]| {
            let mut text = format!("{}\n", crate::market::HEADER);
            for m in minutes {
                text.push_str(&format!("2022-01-01T00:{m:02}:00Z,2,3,1,2,5\n"));
            }
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let a = write("a.csv", &[0, 1, 2, 6]);
        let b = write("b.csv", &[1, 2, 5, 6, 8]);
        let readers = [(&a, 0), (&b, 1)].map(|(p, s)| {
            let sum = scan_candle_file(p, None).unwrap();
            CandleReader::open(p, SymbolId(s), sum.interval_ms).unwrap()
        });
        let base = 1_640_995_200_000 / 60_000;
        let got: Vec<(i64, u16)> = keys(MergedFeed::new(readers.into()))
            .into_iter()
            .map(|(m, s)| (m - base, s))
            .collect();
        assert_eq!(
            got,
            [
                (0, 0),
                (1, 0),
                (1, 1),
                (2, 0),
                (2, 1),
                (5, 1),
                (6, 0),
                (6, 1),
                (8, 1)
            ]
        );
    }
}
