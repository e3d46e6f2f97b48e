"""Uni-Code ablation: pretrain + transfer with each component switched off (the paper's Table 2).

    python bench/unicode_ablation.py --workdir runs/ablation [--steps N] [--variant tiny] [--write]

Runs `configs/pretrain.py` (all components, then without CLUB, without Cross-CPC, with plain EMA
instead of MM-EMA, without the dead-code reset, without code matching), each followed by
`configs/transfer.py` on its workdir, and prints the table as JSON rows. Finished runs in the
workdir are reused, so an interrupted ablation continues where it stopped. `--write` puts the table
into bench/RESULTS.md between the ablation markers (replacing an older table there).
"""

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import pretrain, transfer  # noqa: E402
from fmjax.train import loop  # noqa: E402

ABLATIONS = {  # name -> overrides of the pretrain config (dotted keys)
    "full": {},
    "w/o CLUB": {"loss.club": 0.0},
    "w/o Cross-CPC": {"loss.cpc": 0.0},
    "plain EMA (w/o MM-EMA)": {"model.ema_cross_weight": 0.0},
    "w/o dead-code reset": {"model.reset_after": 0},
    "w/o code matching": {"loss.code_matching": 0.0},
}
COLUMNS = ("v2c_acc", "c2v_acc", "v2c_f1", "c2v_f1", "perplexity", "code_agreement", "code_agreement_chance")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
START, END = "<!-- ablation:start -->", "<!-- ablation:end -->"


def _summary(workdir: str, make_config) -> dict:
  path = os.path.join(workdir, "summary.json")
  if os.path.isfile(path):
    with open(path) as f:
      return json.load(f)
  return loop.train_and_evaluate(make_config(), workdir)


def run_ablation(name: str, overrides: dict, args) -> dict:
  workdir = os.path.join(args.workdir, name.replace(" ", "_").replace("/", "").replace("(", "").replace(")", ""))

  def pretrain_config():
    config = pretrain.get_config(args.variant)
    for key, value in overrides.items():
      section, field = key.split(".")
      config[section][field] = value
    if args.steps:
      config.num_train_steps = args.steps
    return config

  def transfer_config():
    config = transfer.get_config(args.variant)
    config.init_from = os.path.join(workdir, "pretrain")
    return config

  pre = _summary(os.path.join(workdir, "pretrain"), pretrain_config)
  post = _summary(os.path.join(workdir, "transfer"), transfer_config)
  return {"model": name, **{k: post.get(k, pre.get(k)) for k in COLUMNS}, "steps": pre["steps"]}


def _cell(column: str, value: float) -> str:
  """Accuracies and F1 to 3 decimals, perplexity to 1, agreement rates to 2 significant digits (they
  can be 1e-4 and still differ from chance)."""
  if column.startswith("code_agreement"):
    return f"{value:.2g}"
  return f"{value:.1f}" if column == "perplexity" else f"{value:.3f}"


def markdown(rows: list[dict], args) -> str:
  head = "| model | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"
  body = "".join(f"| {r['model']} | " + " | ".join(_cell(k, r[k]) for k in COLUMNS) + " |\n" for r in rows)
  command = f"python bench/unicode_ablation.py --workdir {args.workdir}" + (f" --steps {args.steps}" if args.steps else "")
  command += f" --variant {args.variant}" if args.variant else ""
  return (f"{START}\nMachine: {platform.machine()}, {os.cpu_count()} cpu. Command: `{command}` "
          f"({rows[0]['steps']} pretrain steps per model).\n\n{head}{body}{END}")


def write_results(table: str) -> None:
  text = open(RESULTS).read() if os.path.isfile(RESULTS) else "# Measured figures\n"
  if START in text and END in text:
    text = text[:text.index(START)] + table + text[text.index(END) + len(END):]
  else:
    text = text.rstrip("\n") + "\n\n## Uni-Code ablation (`bench/unicode_ablation.py`)\n\n" + table + "\n"
  with open(RESULTS, "w") as f:
    f.write(text)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default="runs/ablation")
  parser.add_argument("--steps", type=int, default=0, help="pretrain steps per model (0: the config's)")
  parser.add_argument("--variant", default="", help="config variant for both jobs, e.g. 'tiny'")
  parser.add_argument("--write", action="store_true", help="put the table into bench/RESULTS.md")
  args = parser.parse_args()
  rows = []
  for name, overrides in ABLATIONS.items():
    rows.append(run_ablation(name, overrides, args))
    print(json.dumps(rows[-1]), flush=True)
  table = markdown(rows, args)
  print(table)
  if args.write:
    write_results(table)


if __name__ == "__main__":
  main()
