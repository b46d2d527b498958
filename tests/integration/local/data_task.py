"""The realistic data task (issue 14): pandas groupby on a 100,000-row CSV, a scikit-learn fit, a plot.

Shared by its test (``test_sandbox_environment.py``: it must succeed within the default limits)
and its benchmark (``benchmarks/sandbox_env.py``: its time and peak memory). The CSV travels
gzip-compressed (about 400 KB), as requests' input files are capped at 768 KiB; pandas reads it
as it is.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections import defaultdict
from pathlib import Path

ROWS = 100_000
REGIONS = ("north", "south", "east", "west", "centre")
SLOPE = 2.5
"""The amount is ``SLOPE`` per unit plus noise: what the regression must find."""
CSV_NAME = "sales.csv.gz"
PLOT_NAME = "totals.png"
CODE = f"""\
import matplotlib.pyplot as plt
import pandas as pd
from sklearn.linear_model import LinearRegression

sales = pd.read_csv({CSV_NAME!r})
summary = sales.groupby("region").agg(total=("amount", "sum"), orders=("amount", "size"))
print(summary.round(2).to_string())
model = LinearRegression().fit(sales[["units"]], sales["amount"])
print(f"slope {{model.coef_[0]:.2f}} r2 {{model.score(sales[['units']], sales['amount']):.3f}}")
summary["total"].plot.bar(title="Sales by region")
plt.tight_layout()
plt.savefig("/tmp/outputs/{PLOT_NAME}")
"""


def write_csv(path: Path) -> Path:
    """Write the task's gzip-compressed CSV (deterministic) to ``path``."""
    rng = random.Random(14)
    text = io.StringIO()
    text.write("region,units,amount\n")
    for _ in range(ROWS):
        units = rng.randint(1, 50)
        text.write(f"{rng.choice(REGIONS)},{units},{units * SLOPE + rng.gauss(0, 3):.2f}\n")
    path.write_bytes(gzip.compress(text.getvalue().encode(), mtime=0))
    return path


def expected_summary(path: Path) -> dict[str, tuple[float, int]]:
    """Each region's total amount and number of orders, computed without pandas."""
    totals: dict[str, float] = defaultdict(float)
    orders: dict[str, int] = defaultdict(int)
    with gzip.open(path, "rt") as handle:
        for row in csv.DictReader(handle):
            totals[row["region"]] += float(row["amount"])
            orders[row["region"]] += 1
    return {region: (round(totals[region], 2), orders[region]) for region in totals}
