"""Same seeds, same figures? The tiny jobs' summary.json of this checkout against another revision's.

    python bench/compare_summaries.py --base REV [--jobs fmformer:tiny pretrain:tiny ...]

Checks out REV in a temporary git worktree, runs each job's `:tiny` variant through `launch/main.py`
in both trees on one shared data dir (and transfer on each tree's tiny pretrain run), and prints,
as JSON, per job the keys whose values differ, appear or disappear (`wall_s`, `peak_rss_mb` and
`fps` are timings and are left out). A refactoring that keeps behaviour prints no differences.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = ("fmformer:tiny", "fmformer:seg,tiny", "fmformer:video,tiny", "fmformer:current,tiny", "pretrain:tiny",
        "align:tiny", "transfer")
TIMINGS = {"wall_s", "peak_rss_mb", "fps", "first_step_s"}


def run_jobs(tree: str, out: str, jobs: list[str], env: dict) -> dict[str, dict]:
  """{job: summary} of `jobs` run with the code in `tree`, workdirs under `out`."""
  summaries = {}
  for job in jobs:
    if job == "transfer":
      config, workdir = "configs/transfer.py:tiny", os.path.join(out, "transfer")
      extra = [f"--config.init_from={os.path.join(out, 'pretrain_tiny')}"]
    else:
      name, variant = job.split(":")
      config, workdir, extra = f"configs/{name}.py:{variant}", os.path.join(out, job.replace(":", "_")), []
    command = [sys.executable, os.path.join(tree, "launch", "main.py"), f"--config={os.path.join(tree, config)}",
               f"--workdir={workdir}", *extra]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
      raise SystemExit(f"error: {job} failed in {tree}:\n{result.stderr[-2000:]}")
    with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
      summaries[job] = json.load(f)
  return summaries


def differences(before: dict, after: dict) -> dict[str, str]:
  out = {}
  for key in sorted((set(before) | set(after)) - TIMINGS):
    if key not in before:
      out[key] = f"added: {after[key]}"
    elif key not in after:
      out[key] = f"removed: {before[key]}"
    elif before[key] != after[key] and not (isinstance(before[key], float) and isinstance(after[key], float)
                                            and math.isnan(before[key]) and math.isnan(after[key])):
      out[key] = f"{before[key]} -> {after[key]}"
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--base", required=True, help="the git revision to compare against, e.g. HEAD~1")
  parser.add_argument("--jobs", nargs="+", default=list(JOBS), help="name:variant, or 'transfer' (needs pretrain:tiny)")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as scratch:
    base = os.path.join(scratch, "base")
    subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", base, args.base], check=True,
                   capture_output=True)
    try:
      env = {**os.environ, "FMJAX_DATA_DIR": os.path.join(scratch, "data"), "JAX_PLATFORMS": "cpu"}
      before = run_jobs(base, os.path.join(scratch, "before"), args.jobs, env)
      after = run_jobs(REPO, os.path.join(scratch, "after"), args.jobs, env)
    finally:
      subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", base], check=False, capture_output=True)
  print(json.dumps({"base": args.base, "differences": {job: differences(before[job], after[job]) for job in args.jobs}},
                   indent=1))


if __name__ == "__main__":
  main()
