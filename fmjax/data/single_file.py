"""The FMF benchmark's single-file form (the official V1 release) and its conversion to the V2 folder layout.

The single-file form holds each recording in one MATLAB v7.3 (HDF5) `.mat` file (the release's are
probably named set1.mat, set2.mat, ...) with four fields, in MATLAB's order and as h5py reads them (h5py
reverses every array's dimensions):

    video              (H, W, 3, N) uint8                          h5py: [N, 3, W, H]
    current            (3, N): one three-phase reading per frame   h5py: [N, 3]     amperes
    label              (H, W, N) pixel masks, 0/1 or 0/255         h5py: [N, W, H]
                       or one label per frame (class-level data):  h5py: [N, 1], [1, N] or [N]
    train_test_index   (1, N): 0 train, 1 test                     h5py: [N, 1] ([1, N] and [N] accepted)

It records no time: no clock, no frame rate. `convert` writes each file as one recording of the V2 layout
that fmjax reads (`fmf_format`), named after the file's stem:

  * frames and masks are copied byte for byte (a mask is 1 wherever the label is > 0), streamed
    `fmf_format.CHUNK_FRAMES` frames at a time, so a 1.8 GB video is never loaded whole;
  * frame k's timestamp is start + floor(k / fps) seconds, with `fps` given by the caller. Every recording
    starts at `start` (default DEFAULT_START): the files do not say how the recordings lie in time, fmjax
    counts each recording's seconds from its own first current row, and so a file converts to the same
    recording whichever other files lie beside it;
  * the current, one reading per frame, is resampled to the layout's two rows per second: the rows of
    second s hold the current linearly interpolated (`np.interp` over the frame times k / fps, held at
    the first and last reading beyond them) at s and at s + 0.5 seconds, for s = 0 .. ceil(N / fps) - 1,
    so every frame's timestamp lies within the current's time range;
  * train.json / test.json list the frames whose train_test_index is 0 / 1.

Every file is checked before anything is written, and the output is written through `staging.staged`,
so a conversion that fails or is killed leaves no half-written folder. Bad input raises `FmfFormatError`
naming the file and the field. `write_single_file` writes the single-file form (tests use it, and anyone
who needs such files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os

import h5py
import numpy as np

from fmjax.data import fmf_format, staging
from fmjax.runtime import console, errors

DEFAULT_START = "2023-05-10 21:00:00"
FIELDS = ("video", "current", "label", "train_test_index")


@dataclasses.dataclass
class _Source:
  """One checked single-file recording: its sizes and the small fields, read whole (a few bytes a frame)."""
  path: str
  name: str
  frames: int
  height: int
  width: int
  current: np.ndarray              # (N, 3) float64, one reading per frame
  test: np.ndarray                 # (N,) bool: train_test_index == 1
  frame_labels: np.ndarray | None  # (N,) uint8 for class-level data; None where 'label' holds masks


def _fail(path: str, problem: str) -> errors.FmfFormatError:
  return errors.FmfFormatError(f"{path}: {problem}")


def _read(path: str) -> _Source:
  """Checks one single-file recording (shapes, lengths, dtypes, values) and reads its small fields."""
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise _fail(path, f"not a MATLAB v7.3 (HDF5) file ({e}); a .mat saved by an older MATLAB version must be "
                "re-saved with save(..., '-v7.3')") from None
  with f:
    missing = [k for k in FIELDS if not isinstance(f.get(k), h5py.Dataset)]
    if missing:
      raise _fail(path, f"missing field {', '.join(map(repr, missing))} (found {sorted(f.keys())}; expected "
                  f"{', '.join(FIELDS)})")
    video, current, label, index = (f[k] for k in FIELDS)
    if video.ndim != 4 or video.shape[1] != 3:
      raise _fail(path, f"'video' has shape {video.shape} as h5py reads it; expected [N, 3, W, H] (MATLAB's "
                  "(H, W, 3, N))")
    if current.ndim != 2 or current.shape[1] != 3:
      raise _fail(path, f"'current' has shape {current.shape} as h5py reads it; expected [N, 3] (MATLAB's (3, N): "
                  "one three-phase reading per frame)")
    width, height = video.shape[2:]
    masks = label.ndim == 3 and label.shape[1:] == (width, height)
    if not masks and fmf_format.vector_length(label.shape) is None:
      raise _fail(path, f"'label' has shape {label.shape} as h5py reads it; expected masks [N, W, H] = [N, {width}, "
                  f"{height}] to match 'video' {video.shape}, or one label per frame [N, 1]")
    if fmf_format.vector_length(index.shape) is None:
      raise _fail(path, f"'train_test_index' has shape {index.shape} as h5py reads it; expected [N, 1] (MATLAB's "
                  "(1, N))")
    lengths = {"video": video.shape[0], "current": current.shape[0],
               "label": label.shape[0] if masks else fmf_format.vector_length(label.shape),
               "train_test_index": fmf_format.vector_length(index.shape)}
    if len(set(lengths.values())) > 1:
      raise _fail(path, "fields differ in their number of frames N: "
                  + ", ".join(f"'{k}' {n}" for k, n in lengths.items()))
    if lengths["video"] == 0:
      raise _fail(path, "'video' holds no frames")
    if video.dtype != np.uint8:
      raise _fail(path, f"'video' has dtype {video.dtype}; expected uint8")
    for key in FIELDS[1:]:
      if f[key].dtype.kind not in "biuf":
        raise _fail(path, f"{key!r} has dtype {f[key].dtype}; expected numbers")
    readings = current[()].astype(np.float64)
    bad = ~np.isfinite(readings).all(axis=1)
    if bad.any():
      raise _fail(path, f"'current' holds a non-finite reading (NaN or inf) at frame {int(np.argmax(bad))}")
    split = index[()].reshape(-1)
    bad = (split != 0) & (split != 1)
    if bad.any():
      k = int(np.argmax(bad))
      raise _fail(path, f"'train_test_index' holds {split[k]} at frame {k}; expected 0 (train) or 1 (test)")
    return _Source(path=path, name=os.path.splitext(os.path.basename(path))[0], frames=video.shape[0],
                   height=height, width=width, current=readings, test=split == 1,
                   frame_labels=None if masks else (label[()].reshape(-1) > 0).astype(np.uint8))


def _current_rows(readings: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
  """One reading per frame (N, 3) -> two rows per second: (rows (2S, 3), their seconds (2S,)), S = ceil(N / fps)."""
  frame_times = np.arange(len(readings)) / fps
  seconds = max(math.ceil(len(readings) / fps), int(frame_times[-1]) + 1)  # the second bound only guards rounding
  row_times = np.arange(seconds * fmf_format.ROWS_PER_SECOND) / fmf_format.ROWS_PER_SECOND
  rows = np.stack([np.interp(row_times, frame_times, readings[:, p]) for p in range(3)], axis=1)
  return rows, np.floor(row_times).astype(np.int64)


def _write(source: _Source, root: str, start: np.datetime64, fps: float, bar) -> dict:
  """Writes one checked recording into the V2 layout under `root`; returns its summary."""
  frame_labels = source.frame_labels is not None
  with h5py.File(source.path, "r") as f, fmf_format.VideoWriter(
      fmf_format.video_path(root, source.name), source.frames, source.height, source.width, frame_labels) as writer:
    video, label = f["video"], f["label"]
    for first in range(0, source.frames, fmf_format.CHUNK_FRAMES):
      last = min(first + fmf_format.CHUNK_FRAMES, source.frames)
      frames = video[first:last].transpose(0, 3, 2, 1)  # [n, 3, W, H] -> image order (n, H, W, 3)
      labels = (source.frame_labels[first:last] if frame_labels
                else (label[first:last] > 0).astype(np.uint8).transpose(0, 2, 1))
      writer.write(first, frames, labels)
      if bar is not None:
        bar.update(last - first)
  rows, row_seconds = _current_rows(source.current, fps)
  frame_seconds = np.floor(np.arange(source.frames) / fps).astype(np.int64)
  fmf_format.write_signals(root, source.name, start, frame_seconds, rows, row_seconds)
  return {"name": source.name, "frames": source.frames, "seconds": int(row_seconds[-1]) + 1,
          "image": [source.height, source.width], "labels": "per frame" if frame_labels else "masks"}


def convert(src: str, out: str, fps: float, start: str | None = None, progress: bool = False) -> list[dict]:
  """Converts every `*.mat` of folder `src` (single-file form) into a new V2 root `out` (missing or empty).

  `fps`: the videos' frame rate, which the files do not record; `start`: every recording's first timestamp
  ('YYYY-MM-DD HH:MM:SS', default DEFAULT_START). Returns one summary per recording (name, frames, seconds,
  image, labels). All files are checked before anything is written; what a killed conversion left in
  `<out>.partial` is removed first.
  """
  if not (math.isfinite(fps) and fps > 0):
    raise errors.ConfigError(f"fps must be a number > 0 (the videos' frames per second), got {fps}")
  try:
    first_time = np.datetime64(start or DEFAULT_START, "s")
  except ValueError:
    raise errors.ConfigError(f"start {start!r}: not a timestamp like {DEFAULT_START!r}") from None
  if not os.path.isdir(src):
    raise _fail(src, "no such folder (expected a folder of single-file .mat recordings)")
  files = sorted(n for n in os.listdir(src) if n.lower().endswith(".mat") and os.path.isfile(os.path.join(src, n)))
  if not files:
    raise _fail(src, "holds no .mat file (expected one MATLAB v7.3 .mat per recording, e.g. set1.mat)")
  if os.path.lexists(out) and not (os.path.isdir(out) and not os.listdir(out)):
    raise errors.WorkdirError(f"{out}: exists and is not an empty folder; choose a new output folder "
                              "(nothing was overwritten)")
  sources = [_read(os.path.join(src, n)) for n in files]
  sizes = {(s.height, s.width) for s in sources}
  if len(sizes) > 1:
    raise _fail(src, "recordings differ in image size (H, W): "
                + ", ".join(f"{os.path.basename(s.path)} {(s.height, s.width)}" for s in sources))
  total = sum(s.frames for s in sources)
  shown = console.bar(phase="converting", unit="frame", total=total) if progress else contextlib.nullcontext()
  with staging.staged(out, f"converting {src} into {out}") as partial, shown as bar:
    summaries = [_write(s, partial, first_time, fps, bar) for s in sources]
    fmf_format.write_splits(partial, {
        "train": {s.name: np.flatnonzero(~s.test) for s in sources},
        "test": {s.name: np.flatnonzero(s.test) for s in sources}})
  return summaries


def write_single_file(path: str, frames: np.ndarray, current: np.ndarray, labels: np.ndarray,
                      train_test_index: np.ndarray) -> None:
  """Writes one recording in the single-file form (see the module docstring), in memory at once.

  frames (N, H, W, 3) uint8; current (N, 3) amperes, one reading per frame; labels: masks (N, H, W) or one
  label per frame (N,) (written 0/1); train_test_index (N,) 0 train / 1 test. Written like a MATLAB v7.3
  file: h5py's reversed dimensions, a MATLAB userblock and MATLAB_class attributes (`fmf_format.write_video`).
  """
  frames, labels = np.asarray(frames, np.uint8), np.asarray(labels)
  masks = labels if labels.ndim == 3 else fmf_format.FrameMasks(labels, *frames.shape[1:3])
  fmf_format.write_video(path, frames, masks)  # 'data' [N, 3, W, H], 'label' [N, W, H] or [N, 1]
  with h5py.File(path, "r+") as f:  # the userblock stays as write_video left it
    f.move("data", "video")
    for key, value in (("current", current), ("train_test_index", np.reshape(train_test_index, (-1, 1)))):
      f[key] = np.asarray(value, np.float64)
      f[key].attrs["MATLAB_class"] = np.bytes_("double")
