"""The early warning's alarm rule on hand-made score streams."""

import numpy as np
import pytest

from fmjax.evals import warning


def stream(scores, onsets=(), step_s=2.0):
  scores = np.asarray(scores, np.float64)
  return warning.Stream(0, np.arange(1, len(scores) + 1) * step_s, scores, np.zeros(len(scores), int),
                        np.asarray(onsets, np.float64))


def test_smooth_is_the_causal_mean_of_the_last_steps():
  np.testing.assert_allclose(warning.smooth(np.array([2.0, 4.0, 6.0, 8.0]), 2), [2.0, 3.0, 5.0, 7.0])


def test_alarm_onsets_and_false_alarms_by_hand():
  seconds = np.array([10.0, 20, 30, 40, 50, 60])
  alarm = np.array([True, True, False, True, False, True])
  np.testing.assert_array_equal(warning.alarm_onsets(alarm, seconds), [10, 40, 60])
  # A visual onset at 45 s confirms the alarm of 40 s (within 10 s) and the one of 10 s (within 35 s), not 60 s.
  assert warning.false_alarms(alarm, seconds, np.array([45.0]), confirm_s=35.0) == 1
  # With confirm_s 10, the alarm on from 10 to 30 s is raised at 10 and 20 s: neither is confirmed.
  np.testing.assert_array_equal(warning.alarm_raises(alarm, seconds, 10.0), [10, 20, 40, 60])
  assert warning.false_alarms(alarm, seconds, np.array([45.0]), confirm_s=10.0) == 3
  # While the anomaly is visible (video label 1 at 20 s and 60 s), a raise is not false.
  visible = np.array([False, True, False, False, False, True])
  assert warning.false_alarms(alarm, seconds, np.array([45.0]), confirm_s=10.0, visible=visible) == 1


def test_event_warning_is_visual_onset_minus_the_first_alarm_in_its_window():
  s = stream(np.zeros(100))  # steps end at 2, 4, ..., 200 s
  alarm = (s.seconds >= 120) & (s.seconds <= 130)
  events = [{"current_onset_s": 100.0, "visual_onset_s": 150.0},  # window 40..150 s: first alarm 120 s
            {"current_onset_s": 20.0, "visual_onset_s": 60.0}]    # window 0..60 s: no alarm
  warned, missed = warning.event_warnings(s, alarm, events, before_s=60.0)
  assert warned == 30.0 and np.isnan(missed)


def test_threshold_is_the_lowest_that_keeps_false_alarms_within_the_rate():
  """One hour of steps (1,800 x 2 s), quiet at 0.1 but for two bursts: 0.9 right before the visual
  onset at 1,000 s (a true alarm) and 0.6 far from any onset (a false one). At the quiet level the
  alarm is on all hour (raised every 400 s: 9 false alarms); at most one false alarm per hour admits
  the 0.6 burst; none admits only thresholds above 0.6."""
  scores = np.full(1800, 0.1)
  scores[480:490] = 0.9   # 962..980 s, before the onset at 1000 s
  scores[100:110] = 0.6   # 202..220 s, no onset within 400 s
  s = stream(scores, onsets=[1000.0])
  assert warning.fit_threshold([s], 1, 1.0, 400.0) == pytest.approx(0.6)
  strict = warning.fit_threshold([s], 1, 0.0, 400.0)
  assert 0.6 < strict <= 0.9
  assert warning.false_alarms(warning.smooth(s.scores, 1) >= strict, s.seconds, s.onsets, 400.0) == 0


def test_rule_picks_the_smoothing_whose_held_out_alarms_stay_quiet():
  """Three training recordings of an hour (2 s steps), each with an event (current onset 800 s, visual
  onset 1,000 s; score 0.9 in between) and a 10-s burst of 0.9 at 2,500 s, far from any onset. Unsmoothed,
  the burst looks like the event: at most 0.5 false alarms per hour leaves no threshold that warns, so
  held out it warns of nothing. Averaged over 20 steps the burst stays below 0.3 and the event reaches
  0.9: every held-out event is warned with no false alarm. The rule takes 20."""
  streams, events = [], {}
  for r in range(3):
    scores = np.full(1800, 0.1)
    scores[400:500] = 0.9    # 802..1000 s
    scores[1250:1255] = 0.9  # 2502..2510 s
    streams.append(warning.Stream(r, np.arange(1, 1801) * 2.0, scores, np.zeros(1800, int), np.array([1000.0])))
    events[r] = [{"current_onset_s": 800.0, "visual_onset_s": 1000.0}]
  smooth_steps, threshold = warning.fit_rule(streams, events, (1, 20), 0.5, 400.0, 60.0)
  assert smooth_steps == 20 and 0.3 < threshold <= 0.9
  result = warning.score_rule(streams, events, 20, threshold, 400.0, 60.0)
  assert result["false"] == 0 and np.isfinite(result["warnings"]).all() and result["hours"] == pytest.approx(3.0)
  assert warning.fit_rule(streams[:1], events, (1, 20), 0.5, 400.0, 60.0)[0] == 1  # one recording: no held-out
