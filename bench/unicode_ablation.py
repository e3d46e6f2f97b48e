"""Uni-Code ablation: pretrain + transfer with each component switched off (the paper's Table 2).

    python bench/unicode_ablation.py --workdir runs/ablation [--seeds 0,1,2] [--only "full,w/o Cross-CPC"]
        [--steps N] [--variant tiny] [--write]

Runs `configs/pretrain.py` (all components, then without CLUB, without Cross-CPC, with plain EMA
instead of MM-EMA, without the dead-code reset, without code matching; `--only` picks some), each
followed by `configs/transfer.py` on its workdir, once per training seed, and prints a JSON row per
model: the transfer job's balanced accuracies (step and sequence level, zero-shot and the labelled
ceilings), the codes' mutual information and perplexity, as the mean over the seeds with the
smallest and largest value. Finished runs in the workdir (`<name>/seed<S>/{pretrain,transfer}`) are
reused, so an interrupted ablation continues where it stopped. `--write` puts the table into
bench/RESULTS.md between the markers `<!-- <--table>:start/end -->` (replacing an older table there).
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

ABLATIONS = {  # name -> overrides of the pretrain config (dotted keys)
    "full": {},
    "w/o CLUB": {"loss.club": 0.0},
    "w/o Cross-CPC": {"loss.cpc": 0.0},
    "plain EMA (w/o MM-EMA)": {"model.ema_cross_weight": 0.0},
    "w/o dead-code reset": {"model.reset_after": 0},
    "w/o code matching": {"loss.code_matching": 0.0},
}
# Transfer-job keys first (balanced accuracy: the majority class is 65 % of the steps), then the pretrain job's.
COLUMNS = ("v2c_bacc", "c2v_bacc", "seq_v2c_bacc", "seq_c2v_bacc", "c2c_bacc", "v2v_bacc", "code_mi_bits",
           "perplexity")


def run_once(name: str, overrides: dict, seed: int, args) -> dict:
  """The pretrain and transfer jobs of one ablation and seed: {column: value} and the steps."""
  slug = name.replace(" ", "_").replace("/", "").replace("(", "").replace(")", "")
  workdir = os.path.join(args.workdir, slug, f"seed{seed}")

  def pretrain_config():
    config = pretrain.get_config(args.variant)
    for key, value in overrides.items():
      section, field = key.split(".")
      config[section][field] = value
    config.seed = seed
    if args.steps:
      config.num_train_steps = args.steps
    return config

  def transfer_config():
    config = transfer.get_config(args.variant)
    config.init_from = os.path.join(workdir, "pretrain")
    config.seed = seed
    return config

  pre = tables.summary_of(os.path.join(workdir, "pretrain"), pretrain_config)
  post = tables.summary_of(os.path.join(workdir, "transfer"), transfer_config)
  return {**{k: post.get(k, pre.get(k)) for k in COLUMNS}, "steps": pre["steps"]}


def run_ablation(name: str, overrides: dict, seeds: list[int], args) -> dict:
  """One table row: each column's mean over `seeds`, with its range and every seed's value."""
  runs = [run_once(name, overrides, seed, args) for seed in seeds]
  stats = seed_table.aggregate(runs, list(COLUMNS), [f"{name}, seed {seed}" for seed in seeds])
  return {"model": name, "seeds": seeds, "steps": runs[0]["steps"], **stats}


def _number(column: str, value: float) -> str:
  return f"{value:.1f}" if column == "perplexity" else f"{value:.3f}" if "bacc" in column else f"{value:.2f}"


def _cell(column: str, stats: dict) -> str:
  """The mean, and with several seeds its range: e.g. `0.665 (0.645–0.686)`."""
  mean = _number(column, stats["mean"])
  if len(stats["per_seed"]) == 1:
    return mean
  return f"{mean} ({_number(column, stats['min'])}–{_number(column, stats['max'])})"


def markdown(rows: list[dict], args) -> str:
  start, end = tables.markers(args.table)
  head = "| model | seeds | " + " | ".join(COLUMNS) + " |\n|---|---|" + "---|" * len(COLUMNS) + "\n"
  body = "".join(f"| {r['model']} | {len(r['seeds'])} | " + " | ".join(_cell(k, r[k]) for k in COLUMNS) + " |\n"
                 for r in rows)
  command = f"python bench/unicode_ablation.py --workdir {args.workdir} --seeds {args.seeds}"
  command += f' --only "{args.only}"' if args.only else ""
  command += (f" --steps {args.steps}" if args.steps else "") + (f" --variant {args.variant}" if args.variant else "")
  return (f"{start}\nMachine: {platform.machine()}, {os.cpu_count()} cpu. Command: `{command}` "
          f"({rows[0]['steps']} pretrain steps per model; mean (range) over the seeds).\n\n{head}{body}{end}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default="runs/ablation")
  parser.add_argument("--seeds", default="0", help="training seeds, comma-separated (e.g. 0,1,2)")
  parser.add_argument("--only", default="", help="ablations to run, comma-separated names (default: all)")
  parser.add_argument("--table", default="ablation", help="the RESULTS.md markers' name for --write")
  parser.add_argument("--steps", type=int, default=0, help="pretrain steps per model (0: the config's)")
  parser.add_argument("--variant", default="", help="config variant for both jobs, e.g. 'tiny'")
  parser.add_argument("--write", action="store_true", help="put the table into bench/RESULTS.md")
  args = parser.parse_args()
  names = [n.strip() for n in args.only.split(",") if n.strip()] or list(ABLATIONS)
  unknown = [n for n in names if n not in ABLATIONS]
  if unknown:
    parser.error(f"--only: unknown ablation {unknown[0]!r}; expected some of {list(ABLATIONS)}")
  seeds = [int(s) for s in args.seeds.split(",")]
  rows = []
  for name in names:
    rows.append(run_ablation(name, ABLATIONS[name], seeds, args))
    print(json.dumps(rows[-1]), flush=True)
  tables.publish(markdown(rows, args), args, "Uni-Code ablation (`bench/unicode_ablation.py`)")


if __name__ == "__main__":
  with exits.one_line_errors(os.getcwd()):  # a bad root or a full disk: one line, as the CLI
    main()
