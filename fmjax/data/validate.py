"""Whole-root validation of an FMF layout: every file checked, videos streamed, one summary per recording.

Everything fmjax reads from a root later is checked here, before anything is written (`prepare` runs
this first): videos, currents, timestamps, the splits (in range, and no frame in two), and the
synthetic furnace's `events/` and `truth/` where present, so a bad file is one line naming it, never a
traceback in the middle of a run.
"""

import os
from typing import Any

from fmjax.data import fmf_format, ground_truth


def summarize(rec: fmf_format.Recording) -> dict[str, Any]:
  return {
      "name": rec.name, "frames": rec.num_frames, "image": list(rec.image_shape),
      "labels": "per frame" if isinstance(rec.masks, fmf_format.FrameMasks) else "masks",
      "seconds": int(rec.current_seconds[-1]) + 1, "current_rows": len(rec.current),
      "abnormal_share": round(float(rec.labels.mean()), 4),
      "current_min": round(float(rec.current.min()), 2), "current_max": round(float(rec.current.max()), 2),
  }


def validate_root(root: str) -> list[dict[str, Any]]:
  """Checks every file of an FMF root without loading videos whole; returns one summary per recording."""
  names = fmf_format.list_recordings(root)
  recs = [fmf_format.load_recording(root, name, lazy=True) for name in names]
  shapes = {rec.image_shape for rec in recs}
  if len(shapes) > 1:
    raise fmf_format.FmfFormatError(f"{os.path.join(root, 'videos')}: recordings differ in image size: "
                                    f"{sorted(shapes)}")
  counts = {rec.name: rec.num_frames for rec in recs}
  summaries = [summarize(rec) for rec in recs]
  for rec, s in zip(recs, summaries):
    ground_truth.load_events(root, rec.name, s["seconds"])
    ground_truth.load_truth(root, rec)
  for split, per_rec in fmf_format.load_splits(root, counts).items():
    for s in summaries:
      s[split] = int(per_rec[s["name"]].size)
  return summaries
