"""Block-averaged frames of a prepared root, computed once and kept beside its records.

Uni-Code and the aligner see each frame block-averaged by `input.downsample` (64x64 -> 16x16 by
default). Reducing the frames of every sample in the input pipeline costs the training step half the
CPU on two cores, so `ensure(prepared, factor)` writes all frames of the root, reduced, into one
array (`downsampled_x<factor>.npy` in the prepared data dir, (frames, H/f, W/f, 3) uint8: 1/16 of the
frames' bytes at 4), memory-maps it and hands each recording's frame view the slice of its frames.
`pipeline.step_sequence` then slices that array instead of reading and reducing full frames: the
same numbers (`pipeline.downsample` made them), bytes for bytes.

The file is written once, by one process at a time (a lock beside it), through a temporary name
renamed into place (a crash leaves no half file, and the next build removes what it left), with its
disk space claimed before it is filled; one whose shape or type is wrong is said so and rebuilt; where
the data dir cannot be written (a prepared copy on a read-only share) the array is computed in memory
instead, for this run.
"""

from __future__ import annotations

import errno
import glob
import os

import numpy as np

from fmjax.data import pipeline
from fmjax.runtime import console, distributed, errors, files, locks

_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)  # a data dir that cannot be written: reduce in memory
CHUNK_FRAMES = 256  # frames reduced at a time: pipeline.downsample holds them as float64 (25 MB at 64x64)


def path(prepared, factor: int) -> str:
  return os.path.join(prepared.data_dir, f"downsampled_x{factor}.npy")


def _compute(prepared, factor: int, out: np.ndarray) -> None:
  """Every frame of every recording, reduced, into `out` (global frame order), with a bar."""
  offsets = prepared.index["offsets"]
  chunks = [(k, start) for k, rec in enumerate(prepared.recordings) for start in range(0, rec.num_frames, CHUNK_FRAMES)]
  for k, start in console.bar(chunks, phase=f"reducing frames (x{factor}, first use only)", unit="chunk"):
    rec = prepared.recordings[k]
    stop = min(start + CHUNK_FRAMES, rec.num_frames)
    out[offsets[k] + start:offsets[k] + stop] = pipeline.downsample(rec.frames[np.arange(start, stop)], factor)


def _shape(prepared, factor: int) -> tuple[int, ...]:
  h, w = (int(v) for v in prepared.index["image_shape"])
  return (int(prepared.index["offsets"][-1]), h // factor, w // factor, 3)


def _open(prepared, factor: int) -> np.ndarray | None:
  """The cached array, memory-mapped; None (and why, said once) where it is missing or damaged."""
  file = path(prepared, factor)
  if not os.path.isfile(file):
    return None
  try:
    array = np.load(file, mmap_mode="r")
  except (ValueError, OSError) as e:
    console.say(f"{file}: unreadable ({e}); rebuilding it")
    return None
  if array.shape != _shape(prepared, factor) or array.dtype != np.uint8:
    console.say(f"{file}: holds {array.dtype} {array.shape}, not uint8 {_shape(prepared, factor)}; rebuilding it")
    return None
  return array


def _build(prepared, factor: int) -> np.ndarray:
  """Writes the cache file (or, where the data dir is read-only, keeps the array in memory)."""
  array = _open(prepared, factor)
  if array is not None:
    return array
  file = path(prepared, factor)
  lock = os.path.join(os.path.dirname(file), f".{os.path.basename(file)}.lock")
  try:
    # two jobs on one data dir: one builds, the other then opens it
    with locks.exclusive(lock, waiting=f"writing the frames reduced by {factor} into {file}"):
      return _write(prepared, factor, file)
  except OSError as e:
    if files.is_no_space(e):
      raise files.no_space(os.path.dirname(file), f"writing the reduced frames {os.path.basename(file)}",
                           int(np.prod(_shape(prepared, factor))), kept="nothing half-written was kept",
                           error=errors.DataError) from None
    if e.errno not in _READ_ONLY:  # the user's to fix
      raise errors.DataError(f"{file}: writing the reduced frames failed: {e.strerror or e}; nothing was kept, "
                             "a rerun starts again") from None
    console.say(f"{os.path.dirname(file)} cannot be written ({e.strerror}); reducing the frames in memory for "
                "this run")
    out = np.empty(_shape(prepared, factor), np.uint8)
    _compute(prepared, factor, out)
    return out


def _write(prepared, factor: int, file: str) -> np.ndarray:
  """The cache file, written through a temporary one unless another process wrote it meanwhile (the
  caller holds the lock, so a temporary file found is a killed build's)."""
  array = _open(prepared, factor)
  if array is not None:
    return array
  for old in glob.glob(f"{glob.escape(file)}.tmp-*"):
    os.remove(old)
  temporary = f"{file}.tmp-{os.getpid()}"
  try:
    out = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=_shape(prepared, factor))
    if hasattr(os, "posix_fallocate"):  # claim the disk now: a sparse map that meets a full disk dies of SIGBUS
      with open(temporary, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.path.getsize(temporary))
    _compute(prepared, factor, out)
    out.flush()
    del out
    os.replace(temporary, file)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise
  return np.load(file, mmap_mode="r")


def ensure(prepared, factor: int) -> None:
  """Gives each recording of `prepared` (a `tfds_fmf.PreparedFmf`) its frames reduced by `factor`,
  built on first use (by process 0 in a multi-process run, the others then open it). Recordings held
  in memory (frames that are numpy arrays) are left as they are."""
  views = getattr(prepared.recordings[0].frames, "downsampled", None)
  if factor == 1 or views is None or factor in views:
    return
  h, w = (int(v) for v in prepared.index["image_shape"])
  if factor < 1 or h % factor or w % factor:
    raise errors.ConfigError(f"input.downsample={factor} does not divide the frames' size {h}x{w}")
  array = distributed.first_then_others(f"downsampled_x{factor}", lambda: _build(prepared, factor))
  offsets = prepared.index["offsets"]
  for k, rec in enumerate(prepared.recordings):
    rec.frames.downsampled[factor] = array[offsets[k]:offsets[k + 1]]
