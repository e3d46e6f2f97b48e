"""Helpers of the crash-safety tests: command-line runs that may be SIGKILLed, and damaging a saved step."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(cwd, env: dict, *flags: str, kill: str = "") -> subprocess.CompletedProcess:
  """launch/main.py with `flags`, from `cwd`; `kill='STEP:step|save'` SIGKILLs it then (tests/killed_run.py)."""
  script = os.path.join(REPO, "tests", "killed_run.py") if kill else os.path.join(REPO, "launch", "main.py")
  return subprocess.run([sys.executable, script, *flags], cwd=cwd, env={**env, "FMJAX_KILL": kill},
                        capture_output=True, text=True, timeout=300, check=False)


def truncate_largest_array_file(step_dir, size: int) -> None:
  """Cuts the largest data file of a step's OCDBT array store to `size` bytes."""
  files = [os.path.join(d, f) for d, _, names in os.walk(step_dir) for f in names
           if os.path.basename(d) == "d" and "ocdbt.process" in d]
  with open(max(files, key=os.path.getsize), "r+b") as f:
    f.truncate(size)
