"""A prepared dataset's manifest, and what it promises: every file there with its size, an index that agrees.

    manifest.write(directory, {"records": N, "shards": {shard: records}, "files": {name: bytes}})  # written last
    listed = manifest.check_files(directory)   # the manifest, every file it lists there with its size
    manifest.check_index(index, path, N)       # the index's arrays agree with each other and with N records

`fmjax.data.tfds_fmf` writes the manifest once TFDS has renamed a preparation into place, so its presence
says the preparation finished; every opening checks it (milliseconds at the release's size) and prepares
the root again, after one line saying why (`Unusable`'s message), where it does not hold.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from fmjax.data import fmf_format
from fmjax.runtime import files

FILE = "fmf_manifest.json"


class Unusable(Exception):
  """Why a prepared dataset cannot be used as it is: a phrase for the user that names the file."""


def read(directory: str) -> dict[str, Any]:
  """The manifest in `directory`, checked to add up; `Unusable` where it is missing or does not."""
  path = os.path.join(directory, FILE)
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
    manifest = {"records": int(manifest["records"]), "shards": {str(k): int(v) for k, v in manifest["shards"].items()},
                "files": {str(k): int(v) for k, v in manifest["files"].items()}}
  except FileNotFoundError:
    raise Unusable(f"{path} is missing") from None
  except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
    raise Unusable(f"{path} cannot be read ({type(e).__name__}: {e})") from None
  if sum(manifest["shards"].values()) != manifest["records"] or not set(manifest["shards"]) <= set(manifest["files"]):
    raise Unusable(f"{path} does not add up: its shards' records and files differ from its record count and files")
  return manifest


def check_files(directory: str) -> dict[str, Any]:
  """The manifest in `directory` when every file it lists is there with its size; `Unusable` otherwise."""
  listed = read(directory)
  for name, size in listed["files"].items():
    path = os.path.join(directory, name)
    try:
      found = os.path.getsize(path)
    except FileNotFoundError:
      raise Unusable(f"{path} is missing") from None
    if found != size:
      raise Unusable(f"{path} holds {found} bytes, {size} when it was prepared")
  return listed


def write(directory: str, manifest: dict[str, Any]) -> None:
  """Writes `manifest` into `directory`, whole or not at all: last, once every file it lists is there."""
  files.write_atomic(os.path.join(directory, FILE), json.dumps(manifest, indent=1),
                     what="the prepared dataset's manifest")


# The arrays every index holds (`tfds_fmf.build_index`); "mist" is there where the root has ground truth.
INDEX_KEYS = ("names", "offsets", "image_shape", "has_masks", "labels", "frame_seconds", "current", "current_seconds",
              "current_offsets", "start_times", "events") + tuple(f"split_{split}" for split in fmf_format.SPLITS)


def index_problem(index: dict[str, np.ndarray], records: int) -> str | None:
  """What is wrong with an index of `records` records, as a phrase; None where its arrays agree with
  each other and with the records (offsets, per-frame and per-row lengths, splits in range and apart)."""
  missing = [key for key in INDEX_KEYS if key not in index]
  if missing:
    return f"lacks the array(s) {missing}"
  recordings = len(index["names"])
  for key, total in (("offsets", records), ("current_offsets", len(index["current"]))):
    offsets = index[key]
    if offsets.shape != (recordings + 1,) or offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != total:
      return (f"{key!r} ({offsets.shape[0]} entries, ending at {offsets[-1] if offsets.size else None}) do not "
              f"cut {total} rows into {recordings} recordings")
  per_frame = ("labels", "frame_seconds") + (("mist",) if "mist" in index else ())
  lengths = {key: len(index[key]) for key in per_frame} | {"current_seconds": len(index["current_seconds"])}
  wrong = next((key for key in per_frame if lengths[key] != records), None)
  if wrong:
    return f"{wrong!r} has {lengths[wrong]} entries for {records} records"
  if lengths["current_seconds"] != len(index["current"]):
    return f"'current_seconds' has {lengths['current_seconds']} entries for {len(index['current'])} current rows"
  wrong = next((key for key in ("start_times", "events") if len(index[key]) != recordings), None)
  if wrong:
    return f"{wrong!r} has {len(index[wrong])} entries for {recordings} recordings"
  splits = [index[f"split_{split}"] for split in fmf_format.SPLITS]
  for split, frames in zip(fmf_format.SPLITS, splits):
    if frames.size and (frames.min() < 0 or frames.max() >= records):
      return f"split {split!r} holds frames outside [0, {records})"
  first = np.zeros(records, bool)
  first[splits[0]] = True
  both = splits[1][first[splits[1]]]  # linear, where np.intersect1d sorts: this runs at every opening
  if both.size:
    return f"{both.size} frame(s) are in both splits (record {int(both.min())} first)"
  return None


def check_index(index: dict[str, np.ndarray], path: str, records: int) -> None:
  """`Unusable` naming the index file `path` and `index_problem`'s phrase, where there is one."""
  problem = index_problem(index, records)
  if problem:
    raise Unusable(f"{path}: {problem}")
