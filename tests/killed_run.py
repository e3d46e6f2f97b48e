"""Runs `launch/main.py` with its arguments and SIGKILLs itself at a chosen moment (for crash-safety tests).

    FMJAX_KILL=4:step python tests/killed_run.py --config=... [flags]   # killed after step 4, earlier saves on disk
    FMJAX_KILL=6:save python tests/killed_run.py --config=... [flags]   # killed while step 6's async save is written
    FMJAX_KILL=2:term python tests/killed_run.py --config=... [flags]   # sent SIGTERM after step 2
    FMJAX_KILL=classification:eval python tests/killed_run.py ...       # sent SIGTERM as that evaluator starts
    FMJAX_KILL=report:write python tests/killed_run.py ...              # sent SIGTERM as report.md is begun
    FMJAX_KILL=3:pause FMJAX_GO=FILE python tests/killed_run.py ...     # waits after step 3 until FILE exists
    FMJAX_KILL=generate:pause FMJAX_GO=FILE ...                         # waits before generating the furnace

SIGKILL runs no handler, flushes nothing and leaves an async save half-written: what a power cut or the
OOM killer does. The moment is chosen by wrapping `Checkpointer.maybe_save`, which the loop calls after
every step: in 'step' mode the kill comes once earlier saves have reached the disk, in 'save' mode 50 ms
after that step's asynchronous save started (the test checks that orbax's temporary directory is left).
'term' sends SIGTERM instead (what a scheduler's preemption notice or `kill` does): the run is to save and
stop. 'eval' sends SIGTERM as the named evaluator's `run` begins (wrapping `fmjax.evals.base.build`),
'write' as the report is begun (after summary.json: wrapping `fmjax.train.loop._write_report`).
'pause' holds the run there (creating `$FMJAX_GO.paused` first) until the test creates `$FMJAX_GO`: at a
step, or in `generate` (inside the data dir's lock, before the synthetic furnace is written), so that a
test can start a second run while this one holds its locks.
"""

import os
import runpy
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fmjax.checkpoints import checkpointer
from fmjax.data import synthetic
from fmjax.evals import base as eval_base
from fmjax.train import loop

kill_at, mode = os.environ["FMJAX_KILL"].split(":")
kill_step = int(kill_at) if kill_at.isdigit() else None
original = checkpointer.Checkpointer.maybe_save
original_build = eval_base.build
original_write_root = synthetic.write_root
original_write_report = loop._write_report


def pause() -> None:
  go = os.environ["FMJAX_GO"]
  open(f"{go}.paused", "w").close()
  while not os.path.exists(go):
    time.sleep(0.05)


def write_root(*args, **kwargs):
  if kill_at == "generate" and mode == "pause":
    pause()
  return original_write_root(*args, **kwargs)


def write_report(*args, **kwargs):
  if mode == "write":
    os.kill(os.getpid(), signal.SIGTERM)
  return original_write_report(*args, **kwargs)


def maybe_save(self, step, state, *, force=False):
  if step == kill_step and mode == "pause":
    pause()
  if step == kill_step and mode == "term":
    os.kill(os.getpid(), signal.SIGTERM)
  if step == kill_step and mode == "step":
    self.wait()
    os.kill(os.getpid(), signal.SIGKILL)
  started = original(self, step, state, force=force)
  if step == kill_step and mode == "save":
    assert started, f"no save started at step {step}"
    time.sleep(0.05)  # the background thread is writing the step's files now
    os.kill(os.getpid(), signal.SIGKILL)
  return started


def build(name, settings, context):
  evaluator = original_build(name, settings, context)
  if name == kill_at and mode == "eval":
    run = evaluator.run

    def run_after_sigterm(*args, **kwargs):
      os.kill(os.getpid(), signal.SIGTERM)
      return run(*args, **kwargs)
    evaluator.run = run_after_sigterm
  return evaluator


checkpointer.Checkpointer.maybe_save = maybe_save
eval_base.build = build
synthetic.write_root = write_root
loop._write_report = write_report
sys.argv = [os.path.join(REPO, "launch", "main.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
