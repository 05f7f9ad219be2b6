#!/usr/bin/env python3
"""Run the reference SMA(10/30) crossover of ../shared/bench/reference with
backtesting.py (pinned in requirements.txt) and print its statistics as JSON.

Usage: backtesting_py_stats.py CANDLES.csv > stats.json

The rules are those of ../shared/bench/reference/README.md: signals on
closes, fast = SMA(close, 10), slow = SMA(close, 30); cross up when
fast[i-1] <= slow[i-1] and fast[i] > slow[i], cross down when
fast[i-1] >= slow[i-1] and fast[i] < slow[i]; buy 0.1 at the next bar's
open on a cross up while flat, sell everything at the next bar's open on a
cross down while long; no fees, starting cash 100,000.

The crosses are decided in exact decimal arithmetic (the file has bars where
the two averages are exactly equal, which float rolling means do not always
reproduce); the two averages are also given to backtesting.py as float
indicators so its warm-up (the first bar where both exist) is the usual one.

FractionalBacktest with fractional_unit=0.1 trades whole units of 0.1 BTC,
so `buy(size=1)` is a 0.1 BTC order; it scales trade sizes and prices back
in the results. trade_on_close=False (the default) fills at the next open;
finalize_trades=False (the default) leaves the last position open, so it is
not in the trade statistics (only in the equity curve).

Output (one JSON object):
  stats        every scalar of `Backtest.run()`'s Series: numbers as JSON
               numbers (NaN as null), timestamps as RFC 3339 strings,
               durations as seconds
  trades       the closed trades: entry_time, exit_time (fill bars' open
               times), entry_price, exit_price, size, pnl, return_pct
               (fraction), entry_bar, exit_bar
  open_trades  trades still open at the end (same fields, no exit)
  bars         number of bars; warmup_bars backtesting.py's warm-up
  versions     backtesting, numpy, pandas versions actually used
"""
import json
import math
import sys
import warnings
from decimal import Decimal

import numpy as np
import pandas as pd
import backtesting
from backtesting import Strategy
from backtesting.lib import FractionalBacktest

FAST, SLOW = 10, 30


def load(path):
    raw = pd.read_csv(path, dtype=str)
    want = ["timestamp", "open", "high", "low", "close", "volume"]
    if list(raw.columns[:6]) != want:
        sys.exit(f"{path}: expected the header {','.join(want)}, found {','.join(raw.columns)}")
    index = pd.DatetimeIndex(pd.to_datetime(raw["timestamp"], utc=True)).tz_localize(None)
    data = pd.DataFrame(
        {
            "Open": raw["open"].astype(float).values,
            "High": raw["high"].astype(float).values,
            "Low": raw["low"].astype(float).values,
            "Close": raw["close"].astype(float).values,
            "Volume": raw["volume"].astype(float).values,
        },
        index=index,
    )
    closes = [Decimal(c) for c in raw["close"]]
    return data, closes


def exact_cross_sign(closes):
    """sign(fast SMA − slow SMA) per bar in exact decimals (NaN in warm-up).

    fast − slow has the sign of 30·Σ10 − 10·Σ30, compared without division."""
    out = np.full(len(closes), np.nan)
    s_fast = s_slow = Decimal(0)
    for i, c in enumerate(closes):
        s_fast += c
        s_slow += c
        if i >= FAST:
            s_fast -= closes[i - FAST]
        if i >= SLOW:
            s_slow -= closes[i - SLOW]
        if i >= SLOW - 1:
            d = s_fast * SLOW - s_slow * FAST
            out[i] = (d > 0) - (d < 0)
    return out


def sma(values, n):
    return pd.Series(values).rolling(n).mean().values


def make_strategy(sign):
    class SmaCross(Strategy):
        def init(self):
            self.fast = self.I(sma, self.data.Close, FAST, name="fast")
            self.slow = self.I(sma, self.data.Close, SLOW, name="slow")
            self.sign = self.I(lambda: sign, name="sign", plot=False)

        def next(self):
            prev, cur = self.sign[-2], self.sign[-1]
            if not self.position and prev <= 0 and cur > 0:
                self.buy(size=1)  # one unit of fractional_unit = 0.1 BTC
            elif self.position and prev >= 0 and cur < 0:
                self.position.close()

    return SmaCross


def plain(v):
    if isinstance(v, pd.Timestamp):
        return v.tz_localize("UTC").isoformat().replace("+00:00", "Z") if v.tz is None else v.isoformat()
    if isinstance(v, pd.Timedelta):
        return v.total_seconds()
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    return v


def trade_row(t, closed):
    row = {
        "entry_time": plain(t.EntryTime),
        "entry_price": float(t.EntryPrice),
        "size": float(t.Size),
        "entry_bar": int(t.EntryBar),
    }
    if closed:
        row.update(
            exit_time=plain(t.ExitTime),
            exit_price=float(t.ExitPrice),
            exit_bar=int(t.ExitBar),
            pnl=float(t.PnL),
            return_pct=float(t.ReturnPct),
        )
    return row


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: backtesting_py_stats.py CANDLES.csv")
    data, closes = load(sys.argv[1])
    sign = exact_cross_sign(closes)
    bt = FractionalBacktest(
        data,
        make_strategy(sign),
        fractional_unit=0.1,
        cash=100_000,
        commission=0,
        trade_on_close=False,
        finalize_trades=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = bt.run()
    strategy = stats["_strategy"]
    open_rows = [
        {
            "entry_time": plain(t.entry_time),
            "entry_price": float(t.entry_price) / 0.1,
            "size": float(t.size) * 0.1,
            "entry_bar": int(t.entry_bar),
        }
        for t in strategy.trades
    ]
    out = {
        "stats": {k: plain(v) for k, v in stats.items() if not k.startswith("_")},
        "trades": [trade_row(t, True) for t in stats["_trades"].itertuples()],
        "open_trades": open_rows,
        "bars": len(data),
        "warmup_bars": int(max(np.isnan(x).argmin() for x in (strategy.fast, strategy.slow))),
        "versions": {
            "backtesting": backtesting.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
