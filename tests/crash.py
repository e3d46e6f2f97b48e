"""Helpers of the crash-safety tests: command-line runs that may be SIGKILLed, and damaging a saved step."""

import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(cwd, env: dict, *flags: str, kill: str = "") -> subprocess.CompletedProcess:
  """launch/main.py with `flags`, from `cwd`; `kill='STEP:step|save'` SIGKILLs it then (tests/killed_run.py)."""
  script = os.path.join(REPO, "tests", "killed_run.py") if kill else os.path.join(REPO, "launch", "main.py")
  return subprocess.run([sys.executable, script, *flags], cwd=cwd, env={**env, "FMJAX_KILL": kill},
                        capture_output=True, text=True, timeout=300, check=False)


def start_paused(cwd, env: dict, go: str, where: str, *flags: str, timeout: float = 120) -> subprocess.Popen:
  """launch/main.py with `flags` started from `cwd` and held at `where` (a step, or 'generate': tests/killed_run.py's
  'pause') until the file `go` exists; returns once it is held there."""
  log = open(f"{go}.log", "w")
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "killed_run.py"), *flags], cwd=cwd,
                          env={**env, "FMJAX_KILL": f"{where}:pause", "FMJAX_GO": go}, stdout=log,
                          stderr=subprocess.STDOUT, text=True)
  began = time.time()
  while not os.path.exists(f"{go}.paused"):
    if proc.poll() is not None or time.time() - began > timeout:
      proc.kill()
      raise AssertionError(f"the run did not pause at {where}:\n{open(f'{go}.log').read()[-3000:]}")
    time.sleep(0.1)
  return proc


def resume_paused(proc: subprocess.Popen, go: str, timeout: float = 300) -> tuple[int, str]:
  """Lets a `start_paused` run go on; (its exit status, its output)."""
  open(go, "w").close()
  code = proc.wait(timeout=timeout)
  return code, open(f"{go}.log").read()


def truncate_largest_array_file(step_dir, size: int) -> None:
  """Cuts the largest data file of a step's OCDBT array store to `size` bytes."""
  files = [os.path.join(d, f) for d, _, names in os.walk(step_dir) for f in names
           if os.path.basename(d) == "d" and "ocdbt.process" in d]
  with open(max(files, key=os.path.getsize), "r+b") as f:
    f.truncate(size)
