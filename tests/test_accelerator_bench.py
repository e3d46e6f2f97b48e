"""bench/accelerator.py --smoke: the device script runs end to end on a CPU and fills every key the real run does."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_accelerator_script_runs_in_smoke_mode(data_dir, tmp_path):
  out = tmp_path / "accelerator.json"
  results = tmp_path / "RESULTS.md"
  done = subprocess.run([sys.executable, os.path.join(REPO, "bench", "accelerator.py"), "--smoke", f"--out={out}",
                         f"--results={results}"], capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["smoke"] and result["device_kind"] and result["wall_s"] > 0
  two = 2 * result["devices"]  # two clips a device: the suite's 4 forced CPU devices here
  assert [(r["batch"], r["dtype"]) for r in result["fmformer"]] == [(two, "float32"), (two, "bfloat16")]
  for row in result["fmformer"]:
    for kind in ("train", "infer"):
      assert row[f"fmjax_{kind}_clips_per_s"] > 0 and row[f"fmjax_{kind}_flops_per_step_and_device"] > 0
      assert row[f"fmjax_{kind}_mfu"] is None  # this CPU is not in PEAK_FLOPS (test_utilisation: one that is)
  assert result["pretrain"]["steps_per_s"] > 0 and result["pretrain"]["flops_per_step_and_device"] > 0
  assert {(a["implementation"], a["dtype"]) for a in result["attention"]} == {
      (i, d) for i in ("auto", "cpu_chunked", "xla") for d in ("float32", "bfloat16")}
  assert [j["job"] for j in result["jobs"]] == ["pretrain", "transfer", "fmformer", "align"]
  assert all(j["wall_s"] > 0 for j in result["jobs"]) and result["jobs"][0]["steps"] == 2
  assert "### `bench/accelerator.py` on cpu" in results.read_text()


def test_utilisation_is_a_devices_flops_over_its_peak(monkeypatch):
  """100 GFLOP per device in 0.5 s on a device of 400 TFLOP/s bfloat16 and 100 TFLOP/s float32: 0.05 % and 0.2 %."""
  sys.path.insert(0, os.path.join(REPO, "bench"))
  import accelerator
  monkeypatch.setitem(accelerator.PEAK_FLOPS, accelerator.jax.devices()[0].device_kind, (400e12, 100e12))
  assert accelerator.utilisation(100e9, 0.5, "bfloat16") == pytest.approx(5e-4)
  assert accelerator.utilisation(100e9, 0.5, "float32") == pytest.approx(2e-3)
  assert accelerator.utilisation(None, 0.5, "float32") is None
