#!/usr/bin/env python3
"""Writes the real public series the forecaster trains on as CSV files
(timestamp,value; the layout ssm reads) into a folder, by default
../shared/data/forecaster-corpus. They come from the datasets statsmodels
ships (pip install statsmodels): carbon dioxide at Mauna Loa (weekly), sea
surface temperature of the El Nino region (monthly), sunspots (yearly), the
Nile's flow (yearly) and the US macro-economic quarterly series (one file per
column). Rows with a missing value are left out. No NAB data."""
import os
import sys

import pandas as pd
import statsmodels.api as sm


def write(folder, name, times, values):
    path = os.path.join(folder, name + ".csv")
    rows = [(t, v) for t, v in zip(times, values) if pd.notna(v)]
    with open(path, "w") as f:
        f.write("timestamp,value\n")
        for t, v in rows:
            f.write(f"{pd.Timestamp(t).strftime('%Y-%m-%d %H:%M:%S')},{float(v)!r}\n")
    return len(rows)


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join("..", "shared", "data", "forecaster-corpus")
    os.makedirs(folder, exist_ok=True)
    n = 0
    co2 = sm.datasets.co2.load_pandas().data["co2"]
    n += write(folder, "co2_weekly", co2.index, co2.values)
    el = sm.datasets.elnino.load_pandas().data
    months = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    times, values = [], []
    for _, r in el.iterrows():
        for m, col in enumerate(months):
            times.append(pd.Timestamp(year=int(r["YEAR"]), month=m + 1, day=1))
            values.append(r[col])
    n += write(folder, "elnino_monthly", times, values)
    sun = sm.datasets.sunspots.load_pandas().data
    n += write(folder, "sunspots_yearly", [pd.Timestamp(year=int(y), month=1, day=1) for y in sun["YEAR"]],
               sun["SUNACTIVITY"])
    nile = sm.datasets.nile.load_pandas().data
    n += write(folder, "nile_yearly", [pd.Timestamp(year=int(y), month=1, day=1) for y in nile["year"]],
               nile["volume"])
    mac = sm.datasets.macrodata.load_pandas().data
    qt = [pd.Timestamp(year=int(y), month=3 * (int(q) - 1) + 1, day=1) for y, q in zip(mac["year"], mac["quarter"])]
    for col in ["realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1", "tbilrate", "unemp", "pop",
                "infl", "realint"]:
        n += write(folder, "macro_" + col, qt, mac[col])
    print(f"{n} values in {folder}")


if __name__ == "__main__":
    main()
