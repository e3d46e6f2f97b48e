"""What the table benches share (`unicode_ablation.py`, `pretrain_variants.py`, `aligner_table.py`): their common
flags, the runs they reuse, and the tables they put into bench/RESULTS.md."""

import argparse
import json
import os

from fmjax.train import loop

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def add_arguments(parser: argparse.ArgumentParser, *, workdir: str, table: str, seeds: str = "0,1,2",
                  variants: tuple[str, ...] = ()) -> None:
  """--workdir, --seeds, --also, --table and --write, and with `variants` (their default) --variants."""
  parser.add_argument("--workdir", default=workdir)
  if variants:
    parser.add_argument("--variants", nargs="+", default=list(variants),
                        help="config variants, each a model ('default': none; 'a,b': two at once)")
  parser.add_argument("--seeds", default=seeds, help="training seeds, comma-separated (e.g. 0,1,2)")
  parser.add_argument("--also", default="", help="a config variant added to every run (e.g. 'tiny')")
  parser.add_argument("--table", default=table, help="the RESULTS.md markers' name for --write")
  parser.add_argument("--write", action="store_true", help="put the table into bench/RESULTS.md")


def chosen_variants(parser: argparse.ArgumentParser, args: argparse.Namespace, allowed: tuple[str, ...]) -> list[str]:
  """`args.variants` with 'default' as '' (the config as it is); an unknown name (there or in --also) is the
  parser's error."""
  variants = ["" if v == "default" else v for v in args.variants]
  unknown = [v for v in ",".join(variants + [args.also]).split(",") if v and v not in allowed]
  if unknown:
    parser.error(f"unknown variant {unknown[0]!r}; expected 'default' or some of {allowed}")
  return variants


def summary_of(workdir: str, make_config) -> dict:
  """The finished run's summary.json in `workdir`, or the summary of the run `make_config()` trains there."""
  path = os.path.join(workdir, "summary.json")
  if os.path.isfile(path):
    with open(path) as f:
      return json.load(f)
  return loop.train_and_evaluate(make_config(), workdir)


def markers(table: str) -> tuple[str, str]:
  return f"<!-- {table}:start -->", f"<!-- {table}:end -->"


def write_results(table: str, name: str, heading: str) -> None:
  """`table` into bench/RESULTS.md between its markers, or at the end under `heading`."""
  start, end = markers(name)
  text = open(RESULTS).read() if os.path.isfile(RESULTS) else "# Measured figures\n"
  if start in text and end in text:
    text = text[:text.index(start)] + table + text[text.index(end) + len(end):]
  else:
    text = text.rstrip("\n") + f"\n\n## {heading}\n\n" + table + "\n"
  with open(RESULTS, "w") as f:
    f.write(text)


def publish(table: str, args: argparse.Namespace, heading: str) -> None:
  """Prints `table`, and with --write puts it into bench/RESULTS.md (markers `args.table`, else under `heading`)."""
  print(table)
  if args.write:
    write_results(table, args.table, heading)
