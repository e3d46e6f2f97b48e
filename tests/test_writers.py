"""MetricWriter: JSONL records and TensorBoard event files; read_metrics across resumed runs."""

import json
import os
import struct
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.train import writers


def lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _fields(buf):
  """(field number, value) of a serialized protobuf: ints for varints, bytes for the other wire types."""
  out, i = [], 0

  def varint():
    nonlocal i
    value = shift = 0
    while True:
      byte = buf[i]
      i += 1
      value |= (byte & 0x7F) << shift
      shift += 7
      if not byte & 0x80:
        return value

  while i < len(buf):
    key = varint()
    number, wire = key >> 3, key & 7
    if wire == 0:
      value = varint()
    else:
      size = {1: 8, 5: 4}.get(wire) or varint()
      assert wire in (1, 2, 5), f"unexpected wire type {wire}"
      value, i = buf[i:i + size], i + size
    out.append((number, value))
  return out


def read_events(path):
  """A hand-written event file reader: checks each record's framing and CRCs, decodes each `Event` to
  {"wall_time", "step", and "file_version" or "scalars" {tag: value}}."""
  data, events, i = open(path, "rb").read(), [], 0
  while i < len(data):
    length = data[i:i + 8]
    (size,) = struct.unpack("<Q", length)
    assert struct.unpack("<I", data[i + 8:i + 12])[0] == writers.masked_crc32c(length)
    payload = data[i + 12:i + 12 + size]
    assert struct.unpack("<I", data[i + 12 + size:i + 16 + size])[0] == writers.masked_crc32c(payload)
    i += 16 + size
    event = {"step": 0}
    for number, value in _fields(payload):
      if number == 1:
        event["wall_time"] = struct.unpack("<d", value)[0]
      elif number == 2:
        event["step"] = value - (1 << 64) if value >> 63 else value
      elif number == 3:
        event["file_version"] = value.decode()
      elif number == 5:
        event["scalars"] = {}
        for _, v in _fields(value):
          value_fields = dict(_fields(v))
          event["scalars"][value_fields[1].decode()] = struct.unpack("<f", value_fields[2])[0]
    events.append(event)
  assert i == len(data), "torn last record"
  return events


def event_file(workdir):
  (name,) = os.listdir(os.path.join(workdir, "tb"))
  return os.path.join(workdir, "tb", name)


def test_crc32c_matches_the_known_check_values():
  assert writers.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
  assert writers.crc32c(bytes(32)) == 0x8A9136AA and writers.crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720
  assert writers.crc32c(b"") == 0
  crc = 0xE3069283
  assert writers.masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32


def test_event_file_decodes_to_the_written_scalars(tmp_path):
  workdir = str(tmp_path)
  with writers.MetricWriter(workdir) as w:
    w.write(0, {"loss": 2.5, "seen": 64})
    w.write(7, {"loss": np.float32(0.125), "lr": 3e-4})
    w.write(7, {"acc": 0.75, "bad tag": 1.0}, split="eval")
    w.write(2**40, {"big": 1e39})
    w.write(-1, {"neg": -1.5})
  name = os.path.basename(event_file(workdir))
  assert name.startswith("events.out.tfevents.") and name.split(".")[3].isdigit()
  events = read_events(event_file(workdir))
  assert events[0]["file_version"] == "brain.Event:2" and "scalars" not in events[0]
  assert [(e["step"], e["scalars"]) for e in events[1:]] == [
      (0, {"train/loss": 2.5, "train/seen": 64.0}),
      (7, {"train/loss": 0.125, "train/lr": pytest.approx(3e-4)}),
      (7, {"eval/acc": 0.75, "eval/bad_tag": 1.0}),  # invalid tag characters become "_", as in tensorboardX
      (2**40, {"train/big": float("inf")}),  # beyond float32: inf, as protobuf stores it
      (-1, {"train/neg": -1.5}),
  ]
  assert all(e["wall_time"] > 1e9 for e in events)


def test_event_file_parses_as_tensorboard_events(tmp_path):
  # An independent decoder: the Event protobuf class tensorboardX ships (a reader only; fmjax does not use it).
  event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2",
                                  reason="tensorboardX (for its Event protobuf) is not installed")
  with writers.MetricWriter(str(tmp_path)) as w:
    w.write(3, {"miou": 0.25, "loss": 1.5}, split="eval")
  data = open(event_file(str(tmp_path)), "rb").read()
  (size,) = struct.unpack("<Q", data[:8])
  first = event_pb2.Event.FromString(data[12:12 + size])
  second = event_pb2.Event.FromString(data[16 + size + 12:-4])
  assert first.file_version == "brain.Event:2"
  assert second.step == 3 and [(v.tag, v.simple_value) for v in second.summary.value] == [
      ("eval/miou", 0.25), ("eval/loss", 1.5)]
  assert second.SerializeToString() == data[16 + size + 12:-4]  # canonical encoding


def test_write_appends_flushed_json_lines_and_tb_events(tmp_path):
  workdir = str(tmp_path / "run")
  with writers.MetricWriter(workdir) as w:
    w.write(1, {"loss": np.float32(0.5), "lr": jnp.asarray(1e-3), "seen": np.int64(64)})
    # Flushed at each write: readable before close.
    assert lines(workdir) == [{"step": 1, "split": "train", "loss": 0.5, "lr": pytest.approx(1e-3),
                               "seen": 64}]
    w.write(np.int32(2), {"acc": 0.75}, split="eval")
  records = lines(workdir)
  assert records[1] == {"step": 2, "split": "eval", "acc": 0.75}
  assert type(records[0]["loss"]) is float and type(records[0]["seen"]) is int
  events = os.listdir(os.path.join(workdir, "tb"))
  assert len(events) == 1 and events[0].startswith("events.out.tfevents.")
  assert os.path.getsize(os.path.join(workdir, "tb", events[0])) > 0


def test_event_file_holds_split_prefixed_tags(tmp_path):
  with writers.MetricWriter(str(tmp_path)) as w:
    w.write(3, {"miou": 0.25}, split="eval")
  (event,) = os.listdir(tmp_path / "tb")
  data = (tmp_path / "tb" / event).read_bytes()
  assert b"eval/miou" in data


WATCH_IMPORTS = """
import importlib.abc, sys
attempts = []
class Watch(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("torch", "tensorboardX"):
      attempts.append(name)
    return None
sys.meta_path.insert(0, Watch())
assert "torch" not in sys.modules
from fmjax.train import writers
with writers.MetricWriter(sys.argv[1]) as w:
  w.write(1, {"loss": 1.0})
print("torch" in sys.modules, attempts)
"""


def test_writer_does_not_import_torch(tmp_path):
  # A fresh process that never imported torch: writing metrics neither imports nor tries to import torch or
  # tensorboardX, and leaves sys.modules without a "torch" entry (not even a None placeholder).
  out = subprocess.run([sys.executable, "-c", WATCH_IMPORTS, str(tmp_path)], capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "False []"
  assert read_events(event_file(str(tmp_path)))[1]["scalars"] == {"train/loss": 1.0}


def test_disabled_writer_is_a_no_op(tmp_path):
  workdir = str(tmp_path / "other_process")
  with writers.MetricWriter(workdir, enabled=False) as w:
    w.write(1, {"loss": 1.0})
  assert not os.path.exists(workdir)
  assert writers.read_metrics(workdir) == []


def test_bad_scalars_and_closed_writer_raise(tmp_path):
  w = writers.MetricWriter(str(tmp_path))
  with pytest.raises(ValueError, match="not a scalar"):
    w.write(1, {"loss": np.ones(3)})
  with pytest.raises(ValueError, match="reserved"):
    w.write(1, {"step": 1.0})
  w.close()
  w.close()
  with pytest.raises(ValueError, match="closed"):
    w.write(2, {"loss": 1.0})


def test_resume_duplicates_resolve_to_the_later_line(tmp_path):
  workdir = str(tmp_path)
  # First run: logs train 1..80 and eval every 20, then dies; the last checkpoint is step 60.
  with writers.MetricWriter(workdir) as w:
    for step in range(1, 81):
      w.write(step, {"loss": 1.0})
      if step % 20 == 0:
        w.write(step, {"acc": 0.5}, split="eval")
  # Resumed run: restores step 60 and logs 61..100 again with different values.
  with writers.MetricWriter(workdir) as w:
    for step in range(61, 101):
      w.write(step, {"loss": 2.0})
      if step % 20 == 0:
        w.write(step, {"acc": 0.9}, split="eval")
  records = writers.read_metrics(workdir)
  train = [r for r in records if r["split"] == "train"]
  evals = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in train] == list(range(1, 101))
  assert all(r["loss"] == (1.0 if r["step"] <= 60 else 2.0) for r in train)
  assert [(r["step"], r["acc"]) for r in evals] == [(20, 0.5), (40, 0.5), (60, 0.5), (80, 0.9), (100, 0.9)]
  assert [r["step"] for r in records] == sorted(r["step"] for r in records)
  assert len(lines(workdir)) == 80 + 4 + 40 + 2


def test_interrupted_resume_drops_the_abandoned_tail(tmp_path):
  workdir = str(tmp_path)
  with writers.MetricWriter(workdir) as w:
    for step in range(1, 81):
      w.write(step, {"loss": 1.0})
    w.write(80, {"acc": 0.5}, split="eval")
  with writers.MetricWriter(workdir) as w:  # resumed from step 60, killed again at step 70
    for step in range(61, 71):
      w.write(step, {"loss": 2.0})
  records = writers.read_metrics(workdir)
  assert [r["step"] for r in records] == list(range(1, 71))
  assert all(r["split"] == "train" for r in records)
  assert records[-1]["loss"] == 2.0 and records[59]["loss"] == 1.0


def test_torn_last_line_is_terminated_and_skipped(tmp_path):
  workdir = str(tmp_path)
  with writers.MetricWriter(workdir) as w:
    w.write(1, {"loss": 1.0})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 2, "spl')  # killed mid-write
  with writers.MetricWriter(workdir) as w:
    w.write(2, {"loss": 0.5})
  with pytest.warns(UserWarning, match="metrics.jsonl:2"):
    records = writers.read_metrics(workdir)
  assert records == [{"step": 1, "split": "train", "loss": 1.0}, {"step": 2, "split": "train", "loss": 0.5}]
