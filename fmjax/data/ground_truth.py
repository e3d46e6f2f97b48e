"""The synthetic furnace's ground truth of a recording, read and checked: `events/<name>.json` and `truth/<name>.npz`.

    events = ground_truth.load_events(root, name, seconds)   # [{current_onset_s, visual_onset_s, lead_s, split}, ...]
    truth = ground_truth.load_truth(root, recording)          # {mist, glare, spot_radius: per frame; steadiness: per s}

Real data has neither (both give None). `fmjax.data.validate` reads them before anything is prepared, so a
malformed file is one `FmfFormatError` line naming it, never a traceback in the middle of a run.
"""

from __future__ import annotations

import json
import os

import numpy as np

from fmjax.data import fmf_format

# The keys of an event that fmjax reads (fmjax.data.onsets, fmjax.evals.warning), each a number of seconds
# since the recording's first current row except `split`; the synthetic furnace writes more (end_s, ...).
EVENT_SECONDS = ("current_onset_s", "visual_onset_s", "lead_s")
EVENT_ONSETS = ("current_onset_s", "visual_onset_s")
EVENTS_EXAMPLE = '[{"current_onset_s": 100.0, "visual_onset_s": 300.0, "lead_s": 200.0, "split": "test"}, ...]'


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def load_events(root: str, name: str, seconds: int | None = None) -> list[dict] | None:
  """Ground-truth events of a synthetic recording, or None where the folder has none (real data); each
  checked to hold the keys fmjax reads, with onsets inside the recording's `seconds` where given."""
  path = fmf_format.events_path(root, name)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      events = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise fmf_format.fail(path, f"not valid JSON ({e}); expected a list of events like {EVENTS_EXAMPLE}") from None
  if not isinstance(events, list):
    raise fmf_format.fail(path, f"holds a {type(events).__name__}; expected a list of events like {EVENTS_EXAMPLE}")
  for k, event in enumerate(events):
    if not isinstance(event, dict):
      raise fmf_format.fail(path, f"event {k} is a {type(event).__name__}; expected an object like "
                            f"{EVENTS_EXAMPLE[1:-6]}")
    missing = [key for key in EVENT_SECONDS + ("split",) if key not in event]
    if missing:
      raise fmf_format.fail(path, f"event {k} lacks {missing} (an event holds {list(EVENT_SECONDS) + ['split']})")
    wrong = next((key for key in EVENT_SECONDS if not _number(event[key])), None)
    if wrong:
      raise fmf_format.fail(path, f"event {k}: {wrong} is {event[wrong]!r}; expected a finite number of seconds")
    if event["split"] not in fmf_format.SPLITS:
      raise fmf_format.fail(path, f"event {k}: split is {event['split']!r}; expected one of {list(fmf_format.SPLITS)}")
    outside = next((key for key in EVENT_ONSETS if seconds is not None and not 0 <= event[key] <= seconds), None)
    if outside:
      raise fmf_format.fail(path, f"event {k}: {outside} {event[outside]} lies outside the recording (0-{seconds} s, "
                            f"counted from the first current row in {fmf_format.current_path(root, name)})")
  return events


# The arrays of a synthetic recording's truth/<name>.npz: per video frame, and per current second.
TRUTH_PER_FRAME = ("mist", "glare", "spot_radius")
TRUTH_PER_SECOND = ("steadiness",)


def load_truth(root: str, rec: fmf_format.Recording) -> dict[str, np.ndarray] | None:
  """The synthetic furnace's ground truth of `rec` (`truth/<name>.npz`), or None where the folder has none
  (real data); each array checked to be a number per frame or per current second of `rec`."""
  path = fmf_format.truth_path(root, rec.name)
  if not os.path.isfile(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      truth = {key: f[key] for key in f.files}
  except Exception as e:  # zipfile, numpy and OS errors alike: a file that is not an .npz
    raise fmf_format.fail(path, f"cannot be read as a NumPy .npz archive ({type(e).__name__}: {e})") from None
  missing = [key for key in TRUTH_PER_FRAME + TRUTH_PER_SECOND if key not in truth]
  if missing:
    raise fmf_format.fail(path, f"lacks array(s) {missing} (has {sorted(truth)})")
  seconds = len(rec.current) // fmf_format.ROWS_PER_SECOND
  for keys, length, per in ((TRUTH_PER_FRAME, rec.num_frames, "video frame"), (TRUTH_PER_SECOND, seconds,
                                                                                  "current second")):
    for key in keys:
      array = truth[key]
      if array.shape != (length,) or not np.issubdtype(array.dtype, np.number):
        raise fmf_format.fail(path, f"{key!r} has shape {array.shape} and dtype {array.dtype}; expected one number per "
                              f"{per}: ({length},) for {rec.name!r}")
  return truth
