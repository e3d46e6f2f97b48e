"""Does an aligner's lead error follow the furnace it was trained on, or the one it is tested on?

    python bench/aligner_cross.py --runs runs/aligners --workdir runs/aligner_cross \\
        --furnaces 180-300 /data/default25 [--test 180-300 /data/default25] [--seeds 0,1,2] [--also tiny]
        [--write --table NAME]

A furnace is a lead range (`A-B`: the default synthetic furnace with those leads, as in `aligner_table.py
--ranges`) or an FMF root (a folder or a path, as in `aligner_table.py --root`, named by its folder). For each
furnace of `--furnaces` and each seed, the default aligner's run is `<runs>/<name>/default/seed<S>`, the
layout `aligner_table.py` writes (trained there if missing); each is then evaluated on each furnace of
`--test` (default: the same list) without training (`launch/main.py --config=configs/align.py
--config.eval_only=True --config.init_from=RUN --config.data.root=ROOT`; the lag prior is fitted on the test
furnace's training split, as in any run), into `<workdir>/<train>/<test>/seed<S>`, reused when finished
(`--also V`: config variant V in every run, as in `aligner_table.py`). Prints one JSON row per pair and a
table: rows the training furnace, columns the test furnace, cells the lead MAE (mean and per seed) and the
plain argmax's. The diagonal is the usual figure; a row that is worse on every column says its weights are,
whatever furnace they are tested on.
"""

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aligner_table
import seed_table
import tables

from fmjax.runtime import exits

COLUMNS = ("lead_mae_s", "argmax_lead_mae_s")


def furnace(text: str) -> tuple[str, str]:
  """(name, root) of a furnace argument: a folder (or a path) is an FMF root, named as `aligner_table.py`
  names it; anything else a lead range of the synthetic furnace (no root)."""
  if os.path.isdir(text) or os.sep in text:
    return aligner_table.furnace_name(text), text
  return text, ""


def pair(train: str, test: str, seeds: list[int], args) -> dict:
  """The aligners trained on `train` (one per seed) evaluated on `test`: aggregated COLUMNS."""
  (train_name, train_root), (test_name, test_root) = furnace(train), furnace(test)
  runs, names = [], []
  for seed in seeds:
    trained = os.path.join(args.runs, train_name, "default", f"seed{seed}")
    tables.summary_of(trained, lambda seed=seed: aligner_table.align_config("", seed, train_name, train_root,
                                                                             args.also))

    def evaluate(seed=seed, trained=trained):
      config = aligner_table.align_config("", seed, test_name, test_root, args.also)
      config.eval_only, config.init_from = True, trained
      return config

    workdir = os.path.join(args.workdir, train_name, test_name, f"seed{seed}")
    runs.append(tables.summary_of(workdir, evaluate))
    names.append(workdir)
  return {"train": train_name, "test": test_name, "seeds": seeds, "events": runs[0]["events"],
          **seed_table.aggregate(runs, list(COLUMNS), names)}


def markdown(rows: list[dict], args) -> str:
  start, end = tables.markers(args.table)
  tests = list(dict.fromkeys(r["test"] for r in rows))
  head = "| trained on \\ tested on | " + " | ".join(tests) + " |\n|---|" + "---|" * len(tests) + "\n"
  cell = {(r["train"], r["test"]): r for r in rows}

  def text(r: dict) -> str:
    mae, plain = r["lead_mae_s"], r["argmax_lead_mae_s"]
    return (f"{mae['mean']:.1f} ({' / '.join(f'{v:.1f}' for v in mae['per_seed'])}); "
            f"plain argmax {plain['mean']:.1f}")

  body = "".join(f"| {train} | " + " | ".join(text(cell[train, test]) for test in tests) + " |\n"
                 for train in dict.fromkeys(r["train"] for r in rows))
  command = (f"python bench/aligner_cross.py --runs {args.runs} --workdir {args.workdir} --furnaces "
             f"{' '.join(args.furnaces)}" + (f" --test {' '.join(args.test)}" if args.test else "") +
             f" --seeds {args.seeds}" + (f" --also {args.also}" if args.also else ""))
  return (f"{start}\nMachine: {platform.machine()}, {os.cpu_count()} cpu. Command: `{command}` (lead MAE in s, "
          f"mean (per seed)).\n\n{head}{body}{end}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  tables.add_arguments(parser, workdir="runs/aligner_cross", table="aligner_cross")
  parser.add_argument("--runs", default="runs/aligners", help="aligner_table.py's --workdir: the trained runs")
  parser.add_argument("--furnaces", nargs="+", required=True, help="lead ranges (A-B) or FMF roots trained on")
  parser.add_argument("--test", nargs="+", default=None, help="furnaces tested on (default: --furnaces)")
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  rows = []
  for train in args.furnaces:
    for test in args.test or args.furnaces:
      rows.append(pair(train, test, seeds, args))
      print(json.dumps(rows[-1]), flush=True)
  tables.publish(markdown(rows, args), args, "Aligners tested on other furnaces (`bench/aligner_cross.py`)")


if __name__ == "__main__":
  with exits.one_line_errors(os.getcwd()):  # a bad root or a full disk: one line, as the CLI
    main()
