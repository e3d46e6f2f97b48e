"""Visual onsets and the windows around them: the alignment job's sampling.

Samples are a `pipeline.SampleIndex`: an (n, 2) int array of (recording position, frame index), as
a split (`PreparedFmf.split`) gives it; a sample is the window that ends at that frame. A visual onset
(`Onset`) is a normal frame followed by an abnormal one: found in the video labels (`label_onsets`:
no ground truth needed, so the real benchmark has them too) or given by the events of
`events/<name>.json` with their true leads (`event_windows`).

`sample_spec` is the window geometry: the keyword arguments of `pipeline.step_sequence` (num_steps,
step_seconds, frames_per_step, downsample_factor, history_steps), as for `pipeline.make_dataset`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from fmjax.data import fmf_format, pipeline, tfds_fmf
from fmjax.runtime import errors

Recordings = Sequence[fmf_format.Recording]


class Onset(NamedTuple):
  """A visual onset: the recording's position, the second of its first abnormal frame, and the true
  lead in seconds (NaN where unknown)."""
  recording: int
  second: float
  lead_s: float


def sequence_fields(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """video, the whole current (history then window: (B, H + W, R, 3)), and the window's labels."""
  current = np.concatenate([batch["current_history"], batch["current"]], axis=1)
  return {"video": batch["video"], "current": current, "labels": batch["labels"]}


# ----------------------------------------------------------------------------- onsets


def label_onsets(recordings: Recordings, samples: pipeline.SampleIndex) -> list[Onset]:
  """Every visual onset among `samples` by the video labels: an abnormal frame right after a normal one."""
  onsets = []
  for position, recording in enumerate(recordings):
    frames = np.sort(samples[samples[:, 0] == position, 1])
    rises = frames[1:][(recording.labels[frames[1:]] > 0) & (recording.labels[frames[:-1]] == 0) &
                       (np.diff(frames) == 1)]
    onsets += [Onset(position, float(recording.frame_seconds[frame]), np.nan) for frame in rises]
  return onsets


def event_onsets(data: tfds_fmf.PreparedFmf, split: str) -> list[Onset]:
  """The ground-truth events of `split` (`events/<name>.json`), with their true leads."""
  return [Onset(position, event["visual_onset_s"], event["lead_s"]) for position in range(len(data.recordings))
          for event in data.events(position) or [] if event.get("split") == split]


# ----------------------------------------------------------------------------- training samples


def contains_onset(recordings: Recordings, samples: pipeline.SampleIndex, onsets: Sequence[Onset],
                   span_seconds: float) -> np.ndarray:
  """(n,) bool: whether an onset lies in the `span_seconds` before each sample's end, (end - span, end]."""
  inside = np.zeros(len(samples), bool)
  for position, recording in enumerate(recordings):
    mine = samples[:, 0] == position
    ends = recording.frame_seconds[samples[mine, 1]]
    seconds = np.sort([onset.second for onset in onsets if onset.recording == position])
    inside[mine] = np.searchsorted(seconds, ends, side="right") > np.searchsorted(seconds, ends - span_seconds,
                                                                                  side="right")
  return inside


def oversample(samples: pipeline.SampleIndex, chosen: np.ndarray, share: float) -> pipeline.SampleIndex:
  """`samples` with the `chosen` ones repeated so that they make up about `share` of the result
  (share <= 0 or none chosen: unchanged; share >= 1: the chosen ones only)."""
  if share <= 0 or not chosen.any():
    return samples
  if share >= 1:
    return samples[chosen]
  repeat = max(1, int(round(share * (~chosen).sum() / ((1 - share) * chosen.sum()))))
  return np.concatenate([samples[~chosen], np.repeat(samples[chosen], repeat, axis=0)])


def training_samples(recordings: Recordings, samples: pipeline.SampleIndex, sample_spec: Mapping[str, Any],
                     onset_share: float) -> pipeline.SampleIndex:
  """The training windows of a split's `samples`: every end with a full history, plus the ones whose
  window contains a visual onset (by the labels) repeated to make up about `onset_share` of them."""
  valid = pipeline.split_samples(recordings, samples, "sequence", **sample_spec)
  span_seconds = sample_spec["num_steps"] * sample_spec["step_seconds"]
  with_onset = contains_onset(recordings, valid, label_onsets(recordings, samples), span_seconds)
  return oversample(valid, with_onset, onset_share)


# ----------------------------------------------------------------------------- windows around onsets


def onset_windows(recordings: Recordings, onsets: Sequence[Onset], sample_spec: Mapping[str, Any],
                  onset_at: float) -> dict[str, Any]:
  """Per onset: the video window with the onset at `onset_at` of its length, the current history
  before it (`sequence_fields`), the lead (`lead_s`), the recording and the onset's second (`onset_s`);
  onsets too early in their recording for a full history are counted in `skipped`. No onset with a
  window: `skipped` only."""
  window_seconds = sample_spec["num_steps"] * sample_spec["step_seconds"]
  windows, skipped = [], 0
  for onset in onsets:
    recording = recordings[onset.recording]
    end_second = onset.second + (1 - onset_at) * window_seconds
    frame = int(np.searchsorted(recording.frame_seconds, end_second, side="right")) - 1
    try:
      sample = pipeline.step_sequence(recording, frame, **sample_spec)
    except ValueError:
      skipped += 1
      continue
    one = sequence_fields({key: value[None] for key, value in sample.items() if np.ndim(value)})  # no seconds
    windows.append({**one, "lead_s": np.array([onset.lead_s]), "recording": np.array([onset.recording]),
                    "onset_s": np.array([onset.second])})
  out: dict[str, Any] = {}
  if windows:
    out = {key: np.concatenate([window[key] for window in windows]) for key in windows[0]}
  out["skipped"] = skipped
  return out


def event_windows(data: tfds_fmf.PreparedFmf, split: str, sample_spec: Mapping[str, Any],
                  onset_at: float) -> dict[str, Any]:
  """`onset_windows` of the split's ground-truth events; an error where none has a full window."""
  windows = onset_windows(data.recordings, event_onsets(data, split), sample_spec, onset_at)
  if "lead_s" not in windows:
    raise errors.ConfigError(f"no event of the {split!r} split has a full window and {sample_spec['history_steps']} "
                             f"steps of current before it ({windows['skipped']} skipped); the data has no "
                             f"ground-truth events?")
  return windows
