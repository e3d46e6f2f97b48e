"""What a job tells the person running it: one-line notices, and a progress bar per phase.

Only JAX process 0 speaks (with several processes every host would print the same thing). Notices go
to stderr through tqdm, so they do not tear a bar that is being drawn.

The bars of training and of evaluation (`Progress`) count steps or batches that have *finished* on the
devices, not those dispatched (with JAX's asynchronous dispatch the host runs ahead and then waits at
each sync), and their rate is the mean over the phase so far, from the first finished one on (it pays
for compilation), so the ETA holds steady instead of swinging at every sync.
"""

from __future__ import annotations

import sys
import time

import tqdm

# Measured on the 2-core CPU (bench/RESULTS.md: synthetic generation, TFDS preparation), per 64x64 frame;
# used only for the "about how long" of a first-run notice.
GENERATE_FRAMES_PER_S = 1600.0
PREPARE_FRAMES_PER_S = 7700.0


def _min_interval() -> float:
  """Seconds between redraws: often on a terminal, rarely into a log file (each redraw is a line there)."""
  return 0.1 if sys.stderr.isatty() else 10.0


def _speaks() -> bool:
  import jax  # the data layer imports this module without JAX work
  return jax.process_index() == 0


def say(message: str) -> None:
  """One line on stderr for the user (process 0 only)."""
  if _speaks():
    tqdm.tqdm.write(message, file=sys.stderr)


def duration(seconds: float) -> str:
  """'45 s', '3 min', '1.5 h': how long something takes, to a sensible precision."""
  if seconds < 90:
    return f"{round(seconds)} s"
  if seconds < 5400:
    return f"{round(seconds / 60)} min"
  return f"{seconds / 3600:.1f} h"


def estimate(frames: int, height: int, width: int, frames_per_s: float) -> str:
  """A rough duration for work that runs at `frames_per_s` 64x64 frames per second on 2 cores."""
  return duration(frames * (height * width) / (64 * 64) / frames_per_s)


def bar(iterable=None, *, phase: str, unit: str, total: int | None = None) -> tqdm.tqdm:
  """A bar over `iterable` for a phase other than training ('generating data', 'evaluating')."""
  return tqdm.tqdm(iterable, total=total, desc=phase, unit=unit, dynamic_ncols=True, disable=not _speaks(),
                   file=sys.stderr, mininterval=_min_interval())


class Progress:
  """A bar of compiled work: 'compiling' until the first step finishes, then `phase` with a steady ETA.

  Call `finished(step, loss=...)` whenever steps (or batches: `unit`) are known to have finished (the
  training loop polls its pending metrics without blocking, and syncs at each log step).
  """

  def __init__(self, total: int, start: int = 0, clock=time.monotonic, *, phase: str = "training",
               unit: str = "step"):
    self.total, self._clock, self._phase, self._unit = total, clock, phase, unit
    self._bar = tqdm.tqdm(total=total, initial=start, desc="compiling", unit=unit, dynamic_ncols=True,
                          disable=not _speaks(), file=sys.stderr, mininterval=_min_interval(),
                          bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
    self._done = start
    self._postfix: dict[str, str] = {}
    self._first: tuple[float, int] | None = None  # (time, step) when the first step of this run finished
    self.rate: float | None = None   # steps/s over the run so far, first step excluded
    self.eta_s: float | None = None

  def finished(self, step: int, **postfix: str) -> None:
    """Steps up to `step` have finished; `postfix` (e.g. loss='0.12') is shown until the next one given."""
    self._postfix.update(postfix)
    new = max(step - self._done, 0)
    if not new and not postfix:
      return
    if new:
      now = self._clock()
      if self._first is None:
        self._first = (now, step)
        self._bar.set_description_str(self._phase, refresh=False)
      elif now > self._first[0]:
        self.rate = (step - self._first[1]) / (now - self._first[0])
        self.eta_s = (self.total - step) / self.rate
      self._done = step
    fields = dict(self._postfix)
    if self.rate:
      fields.update(rate=f"{self.rate:.2f} {self._unit}/s", eta=duration(self.eta_s))
    self._bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in fields.items()), refresh=False)
    if new:
      self._bar.update(new)
    else:
      self._bar.refresh()

  def close(self) -> None:
    self._bar.close()

  def __enter__(self) -> Progress:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
