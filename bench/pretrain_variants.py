"""Pretraining variants side by side (DCID, H-DCID; each with and without TOC), over training seeds.

    python bench/pretrain_variants.py --workdir runs/variants [--variants default hdcid] [--seeds 0,1,2]
        [--root ROOT] [--also tiny] [--write --table NAME]

For each `configs/pretrain.py` variant ('default' is DCID) and training seed, runs the pretrain job and
then `configs/transfer.py` on its workdir (both in this process; `--root`: on that FMF root, e.g. a
25-fps furnace from `launch/data.py synth --fps 25`), and prints two JSON rows per variant: the model
as trained, and the same model read through TOC's codebook dimensions (the transfer job's `toc_` keys).
Each row holds zero-shot transfer both ways (step and sequence balanced accuracy), the early warning
from the current (recall, median warning before the visible onset, false alarms per hour) and the wall
time of both jobs, as mean, range and per-seed values; the table adds the baselines that make them
meaningful: the labelled-modality ceilings (V->V, C->C), the never-trained model and the hand-crafted
warning detector. Finished runs (`<workdir>/<variant>/seed<S>/{pretrain,transfer}/summary.json`) are
reused, so an interrupted table continues where it stopped.
"""

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import seed_table
import tables

from configs import pretrain, transfer
from fmjax.runtime import exits

FIGURES = ("v2c_bacc", "c2v_bacc", "seq_v2c_bacc", "seq_c2v_bacc", "warning_recall", "warning_median_s",
           "warning_false_per_h")
BASELINES = ("v2v_bacc", "c2c_bacc", "baseline_v2c_bacc", "baseline_c2v_bacc", "baseline_warning_recall",
             "baseline_warning_median_s", "baseline_warning_false_per_h")
SHOWN = {"v2c_bacc": "V→C", "c2v_bacc": "C→V", "seq_v2c_bacc": "seq V→C", "seq_c2v_bacc": "seq C→V",
         "warning_recall": "warning recall", "warning_median_s": "median warning, s",
         "warning_false_per_h": "false alarms / h", "wall_s": "wall, s (pretrain + transfer)"}


def run_once(variant: str, seed: int, args) -> dict:
  """The pretrain and transfer summaries of one variant and seed, merged; wall_s is both jobs' sum."""
  workdir = os.path.join(args.workdir, variant or "default", f"seed{seed}")
  names = ",".join(v for v in (variant, args.also) if v) or None

  def pretrain_config():
    config = pretrain.get_config(names)
    config.seed = seed
    config.data.root = args.root
    return config

  def transfer_config():
    config = transfer.get_config(args.also or None)
    config.init_from = os.path.join(workdir, "pretrain")
    config.seed = seed
    config.data.root = args.root
    return config

  pre = tables.summary_of(os.path.join(workdir, "pretrain"), pretrain_config)
  post = tables.summary_of(os.path.join(workdir, "transfer"), transfer_config)
  return {**pre, **post, "wall_s": pre["wall_s"] + post["wall_s"], "pretrain_steps": pre["steps"]}


def rows_of(variant: str, seeds: list[int], args) -> list[dict]:
  """Two rows (as trained, with TOC) of {key: {mean, min, max, per_seed}} over `seeds`."""
  runs = [run_once(variant, seed, args) for seed in seeds]
  names = [f"{variant or 'default'}, seed {seed}" for seed in seeds]
  name = variant or "default"
  plain = seed_table.aggregate(runs, [*FIGURES, *BASELINES, "wall_s"], names)
  toc = {k: v for k, v in zip(FIGURES, seed_table.aggregate(runs, [f"toc_{k}" for k in FIGURES], names).values())}
  return [{"model": name, "seeds": seeds, "steps": runs[0]["pretrain_steps"], **plain},
          {"model": f"{name} + TOC", "seeds": seeds, "steps": runs[0]["pretrain_steps"], **toc,
           "wall_s": plain["wall_s"]}]


def _number(key: str, value: float) -> str:
  return f"{value:.3f}" if "bacc" in key else f"{value:.2f}" if key.endswith(("recall", "per_h")) else f"{value:.0f}"


def _cell(key: str, stats: dict) -> str:
  return f"{_number(key, stats['mean'])} ({' / '.join(_number(key, v) for v in stats['per_seed'])})"


def markdown(rows: list[dict], args) -> str:
  start, end = tables.markers(args.table)
  keys = [*FIGURES, "wall_s"]
  lines = ["| model | " + " | ".join(SHOWN[k] for k in keys) + " |", "|---|" + "---|" * len(keys)]
  lines += [f"| {r['model']} | " + " | ".join(_cell(k, r[k]) for k in keys) + " |" for r in rows]
  first = rows[0]
  # the target modality's own labelled probe: C->C for V->C, V->V for C->V
  ceilings = {"v2c_bacc": "c2c_bacc", "c2v_bacc": "v2v_bacc"}
  lines.append("| labelled-modality ceiling (C→C, V→V) | " + " | ".join(
      _cell(ceilings[k], first[ceilings[k]]) if k in ceilings else "" for k in keys) + " |")
  lines.append("| never-trained model | " + " | ".join(
      _cell(f"baseline_{k}", first[f"baseline_{k}"]) if k in ceilings else "" for k in keys) + " |")
  lines.append("| hand-crafted warning (current steadiness) | " + " | ".join(
      _cell(f"baseline_{k}", first[f"baseline_{k}"]) if k.startswith("warning") else "" for k in keys) + " |")
  command = f"python bench/pretrain_variants.py --workdir {args.workdir} --variants {' '.join(args.variants)} " \
            f"--seeds {args.seeds}" + (f" --root {args.root}" if args.root else "") + \
            (f" --also {args.also}" if args.also else "")
  return (f"{start}\nMachine: {platform.machine()}, {os.cpu_count()} cpu. Command: `{command}` ({first['steps']} "
          f"pretrain steps; mean (per seed); the ceilings and baselines are those of the first row's runs).\n\n"
          + "\n".join(lines) + f"\n{end}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  tables.add_arguments(parser, workdir="runs/variants", table="pretrain_variants", variants=("default", "hdcid"))
  parser.add_argument("--root", default="", help="an FMF root instead of the default synthetic furnace")
  args = parser.parse_args()
  variants = tables.chosen_variants(parser, args, pretrain.VARIANTS)
  seeds = [int(s) for s in args.seeds.split(",")]
  rows = []
  for variant in variants:
    rows += rows_of(variant, seeds, args)
    for r in rows[-2:]:
      print(json.dumps(r), flush=True)
  tables.publish(markdown(rows, args), args, "Pretraining variants side by side (`bench/pretrain_variants.py`)")


if __name__ == "__main__":
  with exits.one_line_errors(os.getcwd()):  # a bad root or a full disk: one line, as the CLI
    main()
