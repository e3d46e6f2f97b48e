"""Runs `launch/main.py` with its arguments and SIGKILLs itself at a chosen moment (for crash-safety tests).

    FMJAX_KILL=4:step python tests/killed_run.py --config=... [flags]   # killed after step 4, earlier saves on disk
    FMJAX_KILL=6:save python tests/killed_run.py --config=... [flags]   # killed while step 6's async save is written

SIGKILL runs no handler, flushes nothing and leaves an async save half-written: what a power cut or the
OOM killer does. The moment is chosen by wrapping `Checkpointer.maybe_save`, which the loop calls after
every step: in 'step' mode the kill comes once earlier saves have reached the disk, in 'save' mode 50 ms
after that step's asynchronous save started (the test checks that orbax's temporary directory is left).
"""

import os
import runpy
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fmjax.checkpoints import checkpointer

kill_step, mode = os.environ["FMJAX_KILL"].split(":")
kill_step = int(kill_step)
original = checkpointer.Checkpointer.maybe_save


def maybe_save(self, step, state, *, force=False):
  if step == kill_step and mode == "step":
    self.wait()
    os.kill(os.getpid(), signal.SIGKILL)
  started = original(self, step, state, force=force)
  if step == kill_step and mode == "save":
    assert started, f"no save started at step {step}"
    time.sleep(0.05)  # the background thread is writing the step's files now
    os.kill(os.getpid(), signal.SIGKILL)
  return started


checkpointer.Checkpointer.maybe_save = maybe_save
sys.argv = [os.path.join(REPO, "launch", "main.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
