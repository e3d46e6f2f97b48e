"""Read, write and validate the FMF-Benchmark V2 on-disk layout.

    <root>/videos/<name>.mat       MATLAB v7.3 (HDF5): 'data' uint8 [T, 3, W, H], 'label' uint8 [T, W, H]
                                   (pixel-level masks) or [T, 1] (class-level: one label per frame)
    <root>/currents/<name>.csv     header; rows "timestamp, A, B, C", two rows per timestamp second
    <root>/timestamps/<name>.csv   header; one timestamp per video frame (second resolution)
    <root>/train.json, test.json   {"<name>.mat": [frame indices], ...}

h5py sees MATLAB arrays with their axes reversed, so frames are stored [T, C, W, H]; a `Recording`
transposes them back to image order (T, H, W, 3). A class-level recording's masks are `FrameMasks`:
each frame's label over the whole frame, computed on read, never stored. Every problem raises
`FmfFormatError` naming the file and what is wrong. Times are integer seconds since the recording's first current row.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Iterator, Sequence

import h5py
import numpy as np

from fmjax.runtime import errors

TIME_FORMAT_EXAMPLE = "2023-05-10 21:33:27"
SPLITS = ("train", "test")
ROWS_PER_SECOND = 2
CHUNK_FRAMES = 2048  # frames read from HDF5 at a time: bounded memory for any video length
_MATLAB_USERBLOCK = 512


FmfFormatError = errors.FmfFormatError  # a file of an FMF-layout folder is missing or malformed


def fail(path: str, problem: str) -> FmfFormatError:
  return FmfFormatError(f"{path}: {problem}")


# ----------------------------------------------------------------------------- paths


def video_path(root: str, name: str) -> str:
  return os.path.join(root, "videos", f"{name}.mat")


def current_path(root: str, name: str) -> str:
  return os.path.join(root, "currents", f"{name}.csv")


def timestamps_path(root: str, name: str) -> str:
  return os.path.join(root, "timestamps", f"{name}.csv")


def split_path(root: str, split: str) -> str:
  return os.path.join(root, f"{split}.json")


def events_path(root: str, name: str) -> str:
  return os.path.join(root, "events", f"{name}.json")


def truth_path(root: str, name: str) -> str:
  return os.path.join(root, "truth", f"{name}.npz")


def list_recordings(root: str) -> list[str]:
  """Recording names (file stems of videos/*.mat), sorted."""
  videos = os.path.join(root, "videos")
  if not os.path.isdir(root):
    raise fail(root, "no such folder")
  if not os.path.isdir(videos):
    raise fail(videos, "missing folder (an FMF root holds videos/, currents/, timestamps/)")
  names = sorted(f[:-4] for f in os.listdir(videos) if f.endswith(".mat"))
  if not names:
    raise fail(videos, "holds no .mat video")
  return names


# ----------------------------------------------------------------------------- timestamps


def parse_timestamps(strings: Sequence[str], path: str, first_line: int = 2) -> np.ndarray:
  """'YYYY-MM-DD HH:MM:SS' strings -> datetime64[s]; names the first bad line."""
  try:
    return np.array(strings, dtype="datetime64[s]")
  except ValueError:
    for k, s in enumerate(strings):
      try:
        np.datetime64(s, "s")
      except ValueError:
        raise fail(path, f"line {k + first_line}: unparseable timestamp {s!r} "
                   f"(expected like {TIME_FORMAT_EXAMPLE!r})") from None
    raise


def format_timestamps(times: np.ndarray) -> np.ndarray:
  """datetime64[s] -> 'YYYY-MM-DD HH:MM:SS' strings (the benchmark's format)."""
  return np.char.replace(np.datetime_as_string(times.astype("datetime64[s]"), unit="s"), "T", " ")


def _read_csv_rows(path: str) -> list[list[str]]:
  if not os.path.isfile(path):
    raise fail(path, "missing file")
  with open(path, "r", encoding="utf-8-sig") as f:
    lines = f.read().splitlines()
  if not lines:
    raise fail(path, "empty file (expected a header row)")
  return [line.split(",") for line in lines[1:] if line.strip()]


def read_current_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns (times datetime64[s] (N,), current float32 (N, 3)); checks the two-rows-per-second rule."""
  rows = _read_csv_rows(path)
  if not rows:
    raise fail(path, "no current rows after the header")
  bad = next((k for k, r in enumerate(rows) if len(r) != 4), None)
  if bad is not None:
    raise fail(path, f"line {bad + 2}: expected 4 columns (timestamp, A, B, C), got {len(rows[bad])}")
  if len(rows) % ROWS_PER_SECOND:
    raise fail(path, f"odd number of current rows ({len(rows)}): expected two rows per timestamp second")
  times = parse_timestamps([r[0].strip() for r in rows], path)
  try:
    current = np.array([r[1:] for r in rows], dtype=np.float64)
  except ValueError:
    for k, r in enumerate(rows):
      try:
        [float(v) for v in r[1:]]
      except ValueError:
        raise fail(path, f"line {k + 2}: unparseable current value in {r[1:]}") from None
    raise
  finite = np.isfinite(current).all(axis=1)
  if not finite.all():
    k = int(np.argmin(finite))
    raise fail(path, f"line {k + 2}: non-finite current {rows[k][1:]} (NaN or inf)")
  pairs = times.reshape(-1, ROWS_PER_SECOND)
  unpaired = np.flatnonzero(pairs[:, 0] != pairs[:, 1])
  if unpaired.size:
    k = int(unpaired[0]) * ROWS_PER_SECOND
    raise fail(path, f"lines {k + 2}-{k + 3}: rows {rows[k][0]!r} and {rows[k + 1][0]!r} do not share a "
               "timestamp (expected two consecutive rows per second)")
  seconds = pairs[:, 0]
  step = np.diff(seconds).astype(np.int64)
  if (step <= 0).any():
    k = int(np.argmax(step <= 0)) + 1
    raise fail(path, f"line {ROWS_PER_SECOND * k + 2}: timestamp {rows[ROWS_PER_SECOND * k][0]!r} does not "
               "increase (current timestamps must be strictly increasing seconds)")
  return times, current.astype(np.float32)


def read_timestamps_csv(path: str) -> np.ndarray:
  """Per-frame timestamps datetime64[s] (T,), checked non-decreasing."""
  rows = _read_csv_rows(path)
  times = parse_timestamps([r[0].strip() for r in rows], path)
  back = np.diff(times).astype(np.int64) < 0
  if back.any():
    k = int(np.argmax(back)) + 1
    raise fail(path, f"line {k + 2}: timestamp {rows[k][0]!r} is earlier than the previous frame's "
               "(frame timestamps must not decrease)")
  return times


def write_csv(path: str, header: str, columns: Sequence[np.ndarray], formats: Sequence[str]) -> None:
  """Writes rows of the given columns (strings or numbers) after a header line."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fmt = ",".join(formats)
  with open(path, "w", encoding="utf-8") as f:
    f.write(header + "\n")
    f.write("\n".join(fmt % row for row in zip(*columns)))
    f.write("\n")


# ----------------------------------------------------------------------------- video (.mat v7.3)


class _FrameSequence:
  """A lazy (T, ...) sequence of per-frame arrays: `shape`, `dtype` and `__getitem__` (an int, a slice or
  an integer array) given by the subclass; whole, or chunk by chunk in bounded memory."""
  shape: tuple
  dtype: np.dtype

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index) -> np.ndarray:
    raise NotImplementedError

  def __array__(self, dtype=None, copy=None):
    out = self[slice(None)]
    return out if dtype is None else out.astype(dtype)

  def chunks(self, size: int = CHUNK_FRAMES) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (start, self[start:start+size]) over the whole sequence."""
    for start in range(0, len(self), size):
      yield start, self[start:start + size]


class H5Frames(_FrameSequence):
  """Lazy (T, ...) view of an HDF5 dataset in image order; reads only the indexed frames.

  `frames[idx]` accepts an int, a slice or an integer array (any order, repeats allowed) and
  returns numpy arrays, so a 2.2M-frame video is never loaded whole.
  """

  def __init__(self, path: str, key: str):
    self.path, self.key = path, key
    with h5py.File(path, "r") as f:
      ds = f[key]
      self._shape, self.dtype = ds.shape, ds.dtype
    # h5py [T, C, W, H] -> (T, H, W, C); [T, W, H] -> (T, H, W)
    self._axes = (0, 3, 2, 1) if len(self._shape) == 4 else (0, 2, 1)
    self.shape = tuple(self._shape[a] for a in self._axes)
    self._file = None

  def __getstate__(self):  # picklable for worker processes: the handle is reopened lazily
    return {k: v for k, v in self.__dict__.items() if k != "_file"} | {"_file": None}

  def _dataset(self):
    if self._file is None:
      self._file = h5py.File(self.path, "r")
    return self._file[self.key]

  def __getitem__(self, index) -> np.ndarray:
    ds = self._dataset()
    if isinstance(index, (int, np.integer)):
      return np.asarray(ds[int(index)]).transpose(tuple(a - 1 for a in self._axes[1:]))
    if isinstance(index, slice):
      index = np.arange(*index.indices(len(self)))
    index = np.asarray(index, dtype=np.int64)
    uniq, inverse = np.unique(index, return_inverse=True)  # h5py needs increasing indices
    data = ds[uniq] if uniq.size else np.zeros((0,) + self._shape[1:], self.dtype)
    return np.asarray(data).transpose(self._axes)[inverse.reshape(index.shape)]


def vector_length(shape: tuple) -> int | None:
  """The length of a MATLAB vector as h5py shows it ([n], [n, 1] or [1, n]); None for any other shape.
  A 'label' of T frames holds one label per frame (class-level data) when this is T."""
  if len(shape) == 1:
    return shape[0]
  if len(shape) == 2 and 1 in shape:
    return shape[0] * shape[1]
  return None


def check_video(path: str) -> tuple[int, int, int]:
  """Checks 'data' and 'label' of a .mat file; returns (T, H, W). 'label' holds masks [T, W, H] or one
  label per frame ([T, 1], [1, T] or [T]; see `has_masks`)."""
  if not os.path.isfile(path):
    raise fail(path, "missing file")
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise fail(path, f"not a MATLAB v7.3 (HDF5) file ({e})") from None
  with f:
    for key in ("data", "label"):
      if key not in f or not isinstance(f[key], h5py.Dataset):
        raise fail(path, f"no dataset {key!r} (found {sorted(f.keys())})")
    data, label = f["data"], f["label"]
    if data.ndim != 4 or data.shape[1] != 3:
      raise fail(path, f"'data' has shape {data.shape}; expected [T, 3, W, H] as h5py sees MATLAB's array")
    if data.shape[0] == 0:
      raise fail(path, "holds no frames")
    if vector_length(label.shape) != data.shape[0]:
      if label.ndim != 3 or label.shape[1:] != data.shape[2:]:
        raise fail(path, f"'label' has shape {label.shape}; expected masks [T, W, H] = [T, {data.shape[2]}, "
                   f"{data.shape[3]}] or one label per frame [T, 1], to match 'data' {data.shape}")
      if label.shape[0] != data.shape[0]:
        raise fail(path, f"length mismatch: 'data' has {data.shape[0]} frames, 'label' {label.shape[0]}")
    for key in ("data", "label"):
      if f[key].dtype != np.uint8:
        raise fail(path, f"{key!r} has dtype {f[key].dtype}; expected uint8")
    return data.shape[0], data.shape[3], data.shape[2]


def has_masks(path: str) -> bool:
  """Whether a checked video's 'label' holds pixel masks (else one label per frame: class-level)."""
  with h5py.File(path, "r") as f:
    return vector_length(f["label"].shape) != f["data"].shape[0]


class FrameMasks(_FrameSequence):
  """(T, H, W) masks of a class-level recording: frame t's label (0 or 1) at every pixel, made on read."""

  dtype = np.dtype(np.uint8)

  def __init__(self, labels: np.ndarray, height: int, width: int):
    self.labels = (np.asarray(labels).reshape(-1) > 0).astype(np.uint8)
    self.shape = (len(self.labels), height, width)

  def __getitem__(self, index) -> np.ndarray:
    labels = self.labels[index]
    return np.broadcast_to(np.asarray(labels)[..., None, None], np.shape(labels) + self.shape[1:]).copy()


class VideoWriter:
  """Writes a MATLAB v7.3 video chunk by chunk: frames (n, H, W, 3) and masks (n, H, W) in image order,
  or with `frame_labels=True` one label per frame (n,) (class-level data).

  h5py (and the official loader) then read 'data' as [T, 3, W, H] and 'label' as [T, W, H] or [T, 1].
  """

  def __init__(self, path: str, num_frames: int, height: int, width: int, frame_labels: bool = False):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    self.path, self.frame_labels = path, frame_labels
    self._file = h5py.File(path, "w", userblock_size=_MATLAB_USERBLOCK)
    chunk = (min(64, max(num_frames, 1)),)
    self._data = self._file.create_dataset("data", (num_frames, 3, width, height), np.uint8,
                                           chunks=chunk + (3, width, height))
    if frame_labels:  # MATLAB's (1, T) row vector
      self._label = self._file.create_dataset("label", (num_frames, 1), np.uint8)
    else:
      self._label = self._file.create_dataset("label", (num_frames, width, height), np.uint8,
                                              chunks=chunk + (width, height))
    for ds in (self._data, self._label):
      ds.attrs["MATLAB_class"] = np.bytes_("uint8")

  def write(self, start: int, frames: np.ndarray, labels: np.ndarray) -> None:
    """Frames [start, start + n): `labels` are masks (n, H, W), or (n,) with `frame_labels`."""
    stop = start + len(frames)
    self._data[start:stop] = np.asarray(frames, np.uint8).transpose(0, 3, 2, 1)
    if self.frame_labels:
      self._label[start:stop] = np.asarray(labels, np.uint8).reshape(-1, 1)
    else:
      self._label[start:stop] = np.asarray(labels, np.uint8).transpose(0, 2, 1)

  def close(self) -> None:
    self._file.close()
    header = b"MATLAB 7.3 MAT-file, Platform: fmjax, Created by: fmjax HDF5 schema 1.00 ."
    with open(self.path, "r+b") as f:  # MATLAB's userblock: text, subsystem offset, version, endianness
      f.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")

  def __enter__(self) -> "VideoWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def write_video(path: str, frames: np.ndarray, masks) -> None:
  """Writes a whole video at once (see `VideoWriter`); `FrameMasks` are written as per-frame labels."""
  frames = np.asarray(frames, np.uint8)
  frame_labels = isinstance(masks, FrameMasks)
  with VideoWriter(path, len(frames), frames.shape[1], frames.shape[2], frame_labels) as writer:
    writer.write(0, frames, masks.labels if frame_labels else masks)


# ----------------------------------------------------------------------------- recordings


@dataclasses.dataclass
class Recording:
  """One synchronised recording in image order.

  frames (T, H, W, 3) uint8, masks (T, H, W) uint8 -- numpy arrays, or lazy `H5Frames` views (class-level
  data: `FrameMasks`, each frame's label everywhere);
  labels (T,) int32 (1 if any mask pixel is abnormal); frame_seconds (T,) int64;
  current (N, 3) float32 amperes with current_seconds (N,) int64 (two rows per second);
  seconds count from start_time, the timestamp of the first current row.
  """
  name: str
  frames: Any
  masks: Any
  labels: np.ndarray
  frame_seconds: np.ndarray
  current: np.ndarray
  current_seconds: np.ndarray
  start_time: np.datetime64

  @functools.cached_property
  def current_second_values(self) -> np.ndarray:
    """The current's distinct seconds (N/2,), one per row pair: the positions current windows count in."""
    return np.ascontiguousarray(self.current_seconds[::ROWS_PER_SECOND])

  @property
  def num_frames(self) -> int:
    return len(self.labels)

  @property
  def image_shape(self) -> tuple[int, int]:
    return tuple(self.frames.shape[1:3])


def _labels(masks) -> np.ndarray:
  """Frame labels (1 if any mask pixel is abnormal), read chunk by chunk from a lazy view."""
  if isinstance(masks, FrameMasks):
    return masks.labels.astype(np.int32)
  chunks = masks.chunks() if isinstance(masks, H5Frames) else [(0, masks)]
  labels = np.empty(len(masks), np.int32)
  for start, chunk in chunks:
    labels[start:start + len(chunk)] = chunk.reshape(len(chunk), -1).max(axis=1) > 0
  return labels


def load_recording(root: str, name: str, lazy: bool = False) -> Recording:
  """Reads and validates one recording; `lazy` keeps frames and masks on disk (`H5Frames`)."""
  vpath, cpath, tpath = video_path(root, name), current_path(root, name), timestamps_path(root, name)
  num_frames, height, width = check_video(vpath)
  cur_times, current = read_current_csv(cpath)
  frame_times = read_timestamps_csv(tpath)
  if len(frame_times) != num_frames:
    raise fail(tpath, f"length mismatch: {len(frame_times)} timestamps for {num_frames} frames in {vpath}")
  start, last = cur_times[0], cur_times[-1]
  outside = (frame_times < start) | (frame_times > last)
  if outside.any():
    k = int(np.argmax(outside))
    raise fail(tpath, f"line {k + 2}: frame timestamp {format_timestamps(frame_times[k:k + 1])[0]!r} lies "
               f"outside the current's time range {format_timestamps(np.array([start, last]))} in {cpath}")
  frames = H5Frames(vpath, "data")
  if has_masks(vpath):
    masks = H5Frames(vpath, "label")
  else:
    with h5py.File(vpath, "r") as f:
      masks = FrameMasks(f["label"][()], height, width)
  if not lazy:
    frames = frames[slice(None)]
    masks = masks if isinstance(masks, FrameMasks) else masks[slice(None)]
  labels = _labels(masks)
  return Recording(
      name=name, frames=frames, masks=masks, labels=labels,
      frame_seconds=(frame_times - start).astype(np.int64),
      current=current, current_seconds=(cur_times - start).astype(np.int64), start_time=start)


def write_signals(root: str, name: str, start_time: np.datetime64, frame_seconds: np.ndarray,
                  current: np.ndarray, current_seconds: np.ndarray) -> None:
  """Writes currents/<name>.csv and timestamps/<name>.csv (seconds count from start_time)."""
  if len(current) % ROWS_PER_SECOND:
    raise ValueError(f"{name}: current has {len(current)} rows; expected two rows per second")
  start = np.datetime64(start_time, "s")
  cur_times = format_timestamps(start + np.asarray(current_seconds).astype("timedelta64[s]"))
  current = np.asarray(current, np.float64)
  write_csv(current_path(root, name), "time,phase_a,phase_b,phase_c",
            [cur_times, current[:, 0], current[:, 1], current[:, 2]], ["%s", "%.2f", "%.2f", "%.2f"])
  frame_times = format_timestamps(start + np.asarray(frame_seconds).astype("timedelta64[s]"))
  write_csv(timestamps_path(root, name), "time", [frame_times], ["%s"])


def write_recording(root: str, rec: Recording) -> None:
  """Writes one in-memory recording's video, current and timestamp files in the benchmark's layout."""
  write_video(video_path(root, rec.name), rec.frames, rec.masks)
  write_signals(root, rec.name, rec.start_time, rec.frame_seconds, rec.current, rec.current_seconds)


# ----------------------------------------------------------------------------- splits


def write_splits(root: str, splits: dict[str, dict[str, Sequence[int]]]) -> None:
  """splits: {"train": {name: frame indices}, "test": {...}} -> train.json / test.json."""
  for split, per_rec in splits.items():
    with open(split_path(root, split), "w") as f:
      json.dump({f"{name}.mat": [int(i) for i in idx] for name, idx in per_rec.items()}, f)


def load_split(root: str, split: str, num_frames: dict[str, int]) -> dict[str, np.ndarray]:
  """{name: frame indices (int64)} of one split, checked against each recording's frame count."""
  path = split_path(root, split)
  if not os.path.isfile(path):
    raise fail(path, "missing file")
  try:
    with open(path) as f:
      raw = json.load(f)
  except json.JSONDecodeError as e:
    raise fail(path, f"not valid JSON ({e})") from None
  if not isinstance(raw, dict):
    raise fail(path, 'expected an object {"<name>.mat": [frame indices], ...}')
  out = {}
  for key, idx in raw.items():
    name = key[:-4] if key.endswith(".mat") else key
    if name not in num_frames:
      raise fail(path, f"names recording {key!r}, which is not in videos/ (have {sorted(num_frames)})")
    if not isinstance(idx, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
      raise fail(path, f"{key!r}: expected a list of integer frame indices")
    idx = np.asarray(idx, np.int64)
    bad = (idx < 0) | (idx >= num_frames[name])
    if bad.any():
      raise fail(path, f"{key!r}: frame index {int(idx[bad][0])} out of range [0, {num_frames[name]})")
    out[name] = idx
  return {name: out.get(name, np.zeros(0, np.int64)) for name in num_frames}


def load_splits(root: str, num_frames: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
  """Every split's {name: frame indices} (`load_split`), checked to share no frame of a recording: a frame
  both trained and tested on would make every test figure a training figure."""
  splits = {split: load_split(root, split, num_frames) for split in SPLITS}
  first, second = SPLITS
  for name in num_frames:
    both = np.intersect1d(splits[first][name], splits[second][name])
    if both.size:
      shown = ", ".join(str(int(i)) for i in both[:5]) + (", ..." if both.size > 5 else "")
      raise fail(split_path(root, second), f"{name + '.mat'!r}: {both.size} frame(s) are also in "
                 f"{split_path(root, first)} (frames {shown}); a frame belongs to one split")
  return splits


# ----------------------------------------------------------------------------- whole folder
