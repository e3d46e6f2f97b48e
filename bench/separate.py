"""Fair comparisons of implementations: each timed in a fresh interpreter of its own, runs interleaved.

Two frameworks in one process share its cores with each other's thread pools (PyTorch's OpenMP
threads keep spinning after its rounds), which slows whichever runs next. Here every run is a new
process that times one implementation and prints its figures as one JSON object (the last line of its
stdout); runs alternate between the implementations (a, b, a, b, ...), so slow phases of the machine
hit each alike. Used by `bench/fmformer_bench.py`; any bench that compares implementations can.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np


def run_once(command: list[str], env: dict | None = None) -> dict:
  """One fresh interpreter running `command` (in `env`); its last stdout line as JSON (an error names the command)."""
  result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
  lines = [line for line in result.stdout.splitlines() if line.strip()]
  if result.returncode or not lines:
    raise SystemExit(f"error: {' '.join(command)} exited with {result.returncode}:\n{result.stderr[-2000:]}")
  return json.loads(lines[-1])


def interleaved(commands: dict[str, list[str]], runs: int, progress: bool = True,
                envs: dict[str, dict] | None = None) -> dict[str, list[dict]]:
  """{name: [figures of each run]}: `runs` rounds, each running every command once in its own process
  (with `envs[name]` as its environment, where given)."""
  results = {name: [] for name in commands}
  for round_ in range(runs):
    for name, command in commands.items():
      results[name].append(run_once(command, (envs or {}).get(name)))
      if progress:
        print(f"run {round_ + 1}/{runs} {name}: {json.dumps(results[name][-1])}", file=sys.stderr, flush=True)
  return results


def medians(results: dict[str, list[dict]], keys: list[str]) -> dict[str, dict[str, float]]:
  """{name: {key: median over the runs}}."""
  return {name: {k: float(np.median([r[k] for r in runs])) for k in keys} for name, runs in results.items()}
