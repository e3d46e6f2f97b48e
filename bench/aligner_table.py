"""The aligners side by side: lead-time error of each `configs/align.py` variant over lead ranges and seeds.

    python bench/aligner_table.py --workdir runs/aligners [--variants default alignvsr] [--seeds 0,1,2]
        [--ranges 60-120,180-300,300-480] [--root ROOT [ROOT ...]] [--also tiny] [--write --table NAME]

For each lead range (a synthetic furnace whose leads of current over video are drawn from it, every
other setting the default furnace's), each aligner variant and each training seed, runs the align job
(`launch/main.py --config=configs/align.py[:variant] --config.seed=S
--config.data.synthetic.lead_min_s=A --config.data.synthetic.lead_max_s=B`) in this process, and prints
one JSON row per variant and range: the lead MAE, the share of test events within 10 s and the MAE of
the similarity's plain argmax, without the lag prior (mean, range and per seed), the hand-crafted
detector's MAE on the same events, and the wall time. With `--root` the furnaces are those FMF roots, one
row each named by its folder (e.g. a 25-fps furnace from `launch/data.py synth --fps 25`), and `--ranges` is
ignored: their leads are what they are. `--also V` adds config variant V to every run (`--also tiny`:
seconds-long smoke runs).

The search must reach the longest lead: a range whose top exceeds the config's search
(`input.max_lag_steps` steps) is searched up to 1.1 times its top (`max_lag_steps` raised, said in the
row). Finished runs (`<workdir>/<range>/<variant>/seed<S>/summary.json`) are reused, so an
interrupted table continues where it stopped. `--write` puts the table into bench/RESULTS.md between
the markers `<!-- NAME:start/end -->`.
"""

import argparse
import json
import math
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import seed_table
import tables

from configs import align
from fmjax.runtime import exits

COLUMNS = ("lead_mae_s", "lead_within_10s", "argmax_lead_mae_s", "baseline_lead_mae_s", "baseline_lead_within_10s",
           "wall_s")


def furnace_name(root: str) -> str:
  """An FMF root's name in the tables and in the runs' layout (`<workdir>/<name>/<variant>/seed<S>`): its folder's."""
  return os.path.basename(os.path.normpath(root))


def _range(text: str) -> tuple[float, float]:
  low, high = text.split("-")
  return float(low), float(high)


def align_config(variant: str, seed: int, lead_range: str, root: str, also: str = ""):
  config = align.get_config(",".join(v for v in (variant, also) if v) or None)
  config.seed = seed
  if root:
    config.data.root = root
    return config
  low, high = _range(lead_range)
  config.data.synthetic.lead_min_s, config.data.synthetic.lead_max_s = low, high
  searched = config.input.max_lag_steps * config.input.step_seconds
  if high > searched:
    config.input.max_lag_steps = math.ceil(1.1 * high / config.input.step_seconds)
  return config


def row(variant: str, lead_range: str, seeds: list[int], args) -> dict:
  runs, names = [], []
  for seed in seeds:
    config = align_config(variant, seed, lead_range, args.roots.get(lead_range, ""), args.also)
    workdir = os.path.join(args.workdir, lead_range, variant or "default", f"seed{seed}")
    runs.append(tables.summary_of(workdir, lambda config=config: config))
    names.append(workdir)
  stats = seed_table.aggregate(runs, list(COLUMNS), names)
  return {"variant": variant or "default", "range": lead_range, "seeds": seeds, "events": runs[0]["events"],
          "searched_s": config.input.max_lag_steps * config.input.step_seconds, **stats}


def _cell(column: str, stats: dict) -> str:
  number = (lambda v: f"{v:.0%}") if "within" in column else (lambda v: f"{v:.0f}") if column == "wall_s" else \
      (lambda v: f"{v:.1f}")
  if len(stats["per_seed"]) == 1:
    return number(stats["mean"])
  return f"{number(stats['mean'])} ({' / '.join(number(v) for v in stats['per_seed'])})"


def markdown(rows: list[dict], args) -> str:
  start, end = tables.markers(args.table)
  head = ("| leads | aligner | test events | lead MAE, s | within 10 s | MAE without the prior, s "
          "| hand-crafted MAE, s | hand-crafted within 10 s | wall, s |\n|---|---|---|---|---|---|---|---|---|\n")
  body = "".join(f"| {r['range']} (searched 0–{r['searched_s']:.0f} s) | {r['variant']} | {r['events']} | "
                 + " | ".join(_cell(k, r[k]) for k in COLUMNS) + " |\n" for r in rows)
  command = (f"python bench/aligner_table.py --workdir {args.workdir} --variants {' '.join(args.variants)} "
             f"--seeds {args.seeds}") + (f" --also {args.also}" if args.also else "")
  command += f" --root {' '.join(args.root)}" if args.root else f" --ranges {args.ranges}"
  return (f"{start}\nMachine: {platform.machine()}, {os.cpu_count()} cpu. Command: `{command}` (mean (per seed); "
          f"the hand-crafted detector has no seed).\n\n{head}{body}{end}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  tables.add_arguments(parser, workdir="runs/aligners", table="aligners", variants=("default", "alignvsr"))
  parser.add_argument("--ranges", default="60-120,180-300,300-480", help="lead ranges in seconds, A-B, comma-separated")
  parser.add_argument("--root", nargs="+", default=[], help="FMF roots instead of synthetic furnaces per range")
  args = parser.parse_args()
  variants = tables.chosen_variants(parser, args, align.VARIANTS)
  seeds = [int(s) for s in args.seeds.split(",")]
  args.roots = {furnace_name(root): root for root in args.root}
  ranges = list(args.roots) if args.root else args.ranges.split(",")
  rows = []
  for lead_range in ranges:
    for variant in variants:
      rows.append(row(variant, lead_range, seeds, args))
      print(json.dumps(rows[-1]), flush=True)
  tables.publish(markdown(rows, args), args, "The aligners side by side (`bench/aligner_table.py`)")


if __name__ == "__main__":
  with exits.one_line_errors(os.getcwd()):  # a bad root or a full disk: one line, as the CLI
    main()
