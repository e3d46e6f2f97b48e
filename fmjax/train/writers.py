"""Metric writers: one JSON line per write in `<workdir>/metrics.jsonl`, and TensorBoard event files.

The JSONL file is the record the report and the tests read back (`read_metrics`); the event files under
`<workdir>/tb/` are for watching a run in TensorBoard. Event files are written here directly (`EventFile`:
TFRecord framing around hand-serialized `Event` protos holding scalar summaries), so neither TensorFlow,
CLU, tensorboardX nor PyTorch is needed or imported. Only JAX process 0 writes: other processes pass
`enabled=False`.

Resumed runs append to the same JSONL file and start a new event file. A run restored from an earlier
checkpoint logs some steps again; `read_metrics` resolves that to the later run's records. A full disk while
writing either is one `WorkdirError` line (`files.no_space`); a line it cut short is ended when the file is next
opened, and `read_metrics` skips it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import time
import warnings
from typing import Any, Mapping

import numpy as np

from fmjax.runtime import files

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"


@contextlib.contextmanager
def _full_disk_is_one_line(directory: str, what: str):
  """A full disk while writing `what` in `directory` as `files.no_space`'s one line (other errors pass)."""
  try:
    yield
  except OSError as e:
    if not files.is_no_space(e):
      raise
    raise files.no_space(directory, what) from None


def _write_all(file, data: bytes) -> None:
  """All of `data` to an unbuffered `file` (a write the disk cuts short returns a short count; the next raises)."""
  view = memoryview(data)
  while view:
    view = view[file.write(view):]


def _python_scalar(key: str, value: Any) -> float | int:
  """A Python float (or int, for integer and bool values) from a Python, numpy or JAX scalar."""
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f"metric {key!r} is not a scalar: shape {array.shape}")
  item = array.reshape(()).item()
  return int(item) if isinstance(item, (bool, int)) else float(item)


def _crc32c_table() -> tuple[int, ...]:
  """The byte table of CRC-32C (Castagnoli, reflected polynomial 0x82F63B78)."""
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C of `data` (the checksum TFRecord files use)."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC-32C of `data`: rotated right by 15 bits, plus a constant, mod 2**32."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(payload: bytes) -> bytes:
  """One TFRecord: uint64 length, masked CRC of the length, payload, masked CRC of the payload."""
  length = struct.pack("<Q", len(payload))
  return (length + struct.pack("<I", masked_crc32c(length)) + payload
          + struct.pack("<I", masked_crc32c(payload)))


def _varint(value: int) -> bytes:
  """Protobuf base-128 varint; negative values as their 64-bit two's complement (as int64 fields are)."""
  value &= (1 << 64) - 1
  out = bytearray()
  while True:
    bits, value = value & 0x7F, value >> 7
    out.append(bits | 0x80 if value else bits)
    if not value:
      return bytes(out)


def _bytes_field(number: int, data: bytes) -> bytes:
  """A length-delimited protobuf field (string, bytes or message)."""
  return _varint(number << 3 | 2) + _varint(len(data)) + data


def _float32(value: float) -> bytes:
  """`value` as a little-endian float32; beyond float32's range it is +-inf, as protobuf stores it."""
  with np.errstate(over="ignore"):
    return np.asarray(value, "<f4").tobytes()


def event_proto(wall_time: float, step: int = 0, file_version: str | None = None,
                scalars: Mapping[str, float] | None = None) -> bytes:
  """A serialized `Event`: wall_time (1, double), step (2, int64), and file_version (3, string) or a
  summary (5) of one Value (1) per scalar, with tag (1, string) and simple_value (2, float)."""
  out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time)
  if step:
    out += _varint(2 << 3 | 0) + _varint(step)
  if file_version is not None:
    out += _bytes_field(3, file_version.encode())
  if scalars:
    values = (_bytes_field(1, tag.encode()) + _varint(2 << 3 | 5) + _float32(value)
              for tag, value in scalars.items())
    out += _bytes_field(5, b"".join(_bytes_field(1, value) for value in values))
  return out


_INVALID_TAG_CHARACTERS = re.compile(r"[^-/\w.]")


def _clean_tag(tag: str) -> str:
  """`tag` as tensorboardX wrote it: characters other than word characters, '-', '/' and '.' become '_',
  leading slashes are dropped."""
  return _INVALID_TAG_CHARACTERS.sub("_", tag).lstrip("/")


class EventFile:
  """A TensorBoard event file `<logdir>/events.out.tfevents.<int time>.<hostname>` of scalar summaries.

  Starts with the file_version record TensorBoard expects; every `add_scalars` is written and flushed at
  once. A file of the same name (a writer opened in the same second on this host) is appended to.
  """

  def __init__(self, logdir: str):
    self.path = os.path.join(logdir, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}")
    with _full_disk_is_one_line(logdir, "writing TensorBoard's event file"):
      os.makedirs(logdir, exist_ok=True)
      self._file = open(self.path, "ab", buffering=0)  # unbuffered: a write cut short leaves nothing to flush
    self._write(event_proto(time.time(), file_version="brain.Event:2"))

  def add_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """One event at `step` holding every `tag: value` of `scalars` (none: nothing is written)."""
    if scalars:
      self._write(event_proto(time.time(), step, scalars={_clean_tag(t): v for t, v in scalars.items()}))

  def _write(self, event: bytes) -> None:
    with _full_disk_is_one_line(os.path.dirname(self.path), "writing TensorBoard's event file"):
      _write_all(self._file, tfrecord(event))

  def close(self) -> None:
    self._file.close()


class MetricWriter:
  """Appends scalars to `<workdir>/metrics.jsonl` and `<workdir>/tb/` event files; a context manager.

  `enabled=False` (any JAX process but 0) makes every method a no-op and creates no files.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.workdir = workdir
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    path = os.path.join(workdir, METRICS_FILE)
    with _full_disk_is_one_line(workdir, f"appending to {METRICS_FILE}"):
      os.makedirs(workdir, exist_ok=True)
      # A run killed mid-write can leave a partial last line: end it so the next record stays parseable.
      torn = os.path.exists(path) and os.path.getsize(path) > 0 and not _ends_with_newline(path)
      self._jsonl = open(path, "ab", buffering=0)  # unbuffered: a write cut short leaves nothing to flush
      if torn:
        _write_all(self._jsonl, b"\n")
    self._tb = EventFile(os.path.join(workdir, TB_DIR))

  def write(self, step: int, scalars: Mapping[str, Any], split: str = "train") -> None:
    """Logs `scalars` at `step`: one JSON line, written at once, {"step", "split", **scalars}, and `split/key` in TB.

    Write all of a split's scalars for a step in one call: `read_metrics` keeps one record per
    (split, step).
    """
    if not self.enabled:
      return
    if self._jsonl is None:
      raise ValueError(f"MetricWriter for {self.workdir} is closed")
    reserved = {"step", "split"} & set(scalars)
    if reserved:
      raise ValueError(f"metric names {sorted(reserved)} are reserved for the record's step and split")
    step = int(step)
    values = {key: _python_scalar(key, value) for key, value in scalars.items()}
    with _full_disk_is_one_line(self.workdir, f"appending to {METRICS_FILE}"):
      _write_all(self._jsonl, (json.dumps({"step": step, "split": split, **values}) + "\n").encode("utf-8"))
    self._tb.add_scalars(step, {f"{split}/{key}": value for key, value in values.items()})

  def close(self) -> None:
    """Closes both files; further closes are no-ops."""
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _ends_with_newline(path: str) -> bool:
  with open(path, "rb") as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of `<workdir>/metrics.jsonl` in step order, with each (split, step) once.

  Later lines win: a run resumed from the checkpoint at step c logs steps after c again, so when a
  split's step is not past the last step already read for that split (a restart), the earlier records
  of that split at that step or later, and those of other splits at later steps, are dropped. This
  also removes the tail of an interrupted run that the resumed run has not reached yet. Lines that are
  not JSON objects (a torn last line) are skipped with a warning. A missing file gives [].
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  records: list[dict[str, Any]] = []
  last_step: dict[str, int] = {}
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        step, split = int(record["step"]), record["split"]
      except (ValueError, TypeError, KeyError) as e:
        warnings.warn(f"{path}:{number}: skipping unreadable metrics line ({e})")
        continue
      if split in last_step and step <= last_step[split]:
        records = [r for r in records if r["step"] < step or (r["step"] == step and r["split"] != split)]
        last_step = {}
        for r in records:
          last_step[r["split"]] = max(last_step.get(r["split"], r["step"]), r["step"])
      records.append(record)
      last_step[split] = max(last_step.get(split, step), step)
  return sorted(records, key=lambda r: r["step"])
