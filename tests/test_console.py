"""What a run tells its user: the training bar's rate and ETA, durations, first-run estimates."""

import pytest

from fmjax.runtime import console


class Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self) -> float:
    return self.now


def test_rate_is_the_mean_since_the_first_finished_step_so_the_eta_holds_steady():
  clock = Clock()
  progress = console.Progress(total=100, start=0, clock=clock)
  clock.now = 30.0  # the first step finishes after 30 s of compilation
  progress.finished(1)
  assert progress.rate is None and progress._bar.desc == "training"
  etas = []
  # Steps finish in bursts, as they do with asynchronous dispatch and a sync every 10 steps: 10 steps per 2 s.
  for burst in range(1, 9):
    clock.now = 30.0 + 2.0 * burst
    progress.finished(1 + 10 * burst, loss="0.5")
    etas.append(progress.eta_s)
  assert progress.rate == pytest.approx(5.0)  # 80 steps in 16 s; the compile time does not count
  assert etas == pytest.approx([(100 - (1 + 10 * b)) / 5.0 for b in range(1, 9)])  # falls by 2 s per 2 s
  progress.close()


def test_a_resumed_run_counts_from_its_first_step_and_ignores_repeats():
  clock = Clock()
  progress = console.Progress(total=10, start=6, clock=clock)
  clock.now = 5.0
  progress.finished(7)
  clock.now = 6.0
  progress.finished(9)
  progress.finished(9, loss="0.1")  # the same step again: only the postfix changes
  progress.finished(8)              # and an older one changes nothing
  assert progress.rate == pytest.approx(2.0) and progress.eta_s == pytest.approx(0.5)
  assert progress._bar.n == 9
  progress.close()


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (44.6, "45 s"), (150, "2 min"), (5400, "1.5 h")])
def test_duration(seconds, text):
  assert console.duration(seconds) == text


def test_estimate_scales_with_pixels():
  assert console.estimate(3200, 64, 64, frames_per_s=1600.0) == "2 s"
  assert console.estimate(3200 * 4, 32, 32, frames_per_s=1600.0) == "2 s"


def test_say_writes_one_line_to_stderr(capfd):
  console.say("preparing something")
  captured = capfd.readouterr()
  assert captured.err == "preparing something\n" and captured.out == ""
