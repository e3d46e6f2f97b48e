"""Figures over several training seeds: each key's mean, range and per-seed values from runs' summary.json.

    python bench/seed_table.py RUN [RUN ...] --keys perplexity code_mi_bits v2c_bacc ... [--json]

Each RUN is a workdir (or its summary.json), one per seed, in the order the seeds are to be listed.
Prints a markdown table `| key | mean (range) | per seed |` (or, with --json, one JSON object); a key
missing from a run is an error naming the run. `bench/unicode_ablation.py` aggregates the same way.
"""

import argparse
import json
import os
import sys

import numpy as np


def load(run: str) -> dict:
  path = run if run.endswith(".json") else os.path.join(run, "summary.json")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise SystemExit(f"error: {path} is missing (not a finished run)") from None


def aggregate(summaries: list[dict], keys: list[str], runs: list[str]) -> dict[str, dict]:
  """{key: {mean, min, max, per_seed}} over `summaries` (NaN values kept out of mean and range)."""
  out = {}
  for key in keys:
    missing = [run for run, s in zip(runs, summaries) if key not in s]
    if missing:
      raise SystemExit(f"error: {missing[0]}: its summary.json has no {key!r}")
    values = np.asarray([float(s[key]) for s in summaries])
    finite = values[np.isfinite(values)]
    out[key] = {"mean": float(finite.mean()) if len(finite) else float("nan"),
                "min": float(finite.min()) if len(finite) else float("nan"),
                "max": float(finite.max()) if len(finite) else float("nan"), "per_seed": values.tolist()}
  return out


def number(value: float) -> str:
  return "nan" if not np.isfinite(value) else f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def markdown(table: dict[str, dict]) -> str:
  lines = ["| key | mean (range) | per seed |", "| --- | --- | --- |"]
  for key, stats in table.items():
    lines.append(f"| `{key}` | {number(stats['mean'])} ({number(stats['min'])}–{number(stats['max'])}) | "
                 + " / ".join(number(v) for v in stats["per_seed"]) + " |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("runs", nargs="+", help="workdirs (or summary.json files), one per seed")
  parser.add_argument("--keys", nargs="+", required=True)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args()
  table = aggregate([load(r) for r in args.runs], args.keys, args.runs)
  print(json.dumps(table) if args.json else markdown(table))


if __name__ == "__main__":
  sys.exit(main())
