"""MetricWriter: JSONL records and TensorBoard event files; read_metrics across resumed runs."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.train import writers


def lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


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


def test_writer_does_not_import_torch(tmp_path):
  # tensorboardX tries `import torch` at import time; a training process must not load PyTorch for it.
  code = ("import sys; from fmjax.train import writers; w = writers.MetricWriter(sys.argv[1]); "
          "w.write(1, {'loss': 1.0}); w.close(); print('torch' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"
  assert os.listdir(tmp_path / "tb")


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
