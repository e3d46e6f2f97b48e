"""The benches that make issue 35's tables (bench/aligner_table.py, aligner_cross.py, pretrain_variants.py), run as
their users run them on the tiny furnace: one JSON row per model with every seed's figure taken from the
runs' own summary.json, a markdown table, and finished runs reused rather than trained again."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _bench(script: str, args: list[str], env: dict) -> tuple[list[dict], str]:
  done = subprocess.run([sys.executable, os.path.join(REPO, "bench", script), *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
  return rows, done.stdout


def _summary(path: str) -> dict:
  with open(os.path.join(path, "summary.json")) as f:
    return json.load(f)


def test_aligner_table_rows_are_the_runs_figures_and_reuse_finished_runs(cli_env, tmp_path):
  workdir = str(tmp_path / "aligners")
  args = ["--workdir", workdir, "--variants", "default", "alignvsr", "--seeds", "0", "--ranges", "20-40",
          "--also", "tiny"]
  rows, out = _bench("aligner_table.py", args, cli_env)
  assert [(r["variant"], r["range"]) for r in rows] == [("default", "20-40"), ("alignvsr", "20-40")]
  for row in rows:
    run = _summary(os.path.join(workdir, "20-40", row["variant"], "seed0"))
    assert row["lead_mae_s"]["per_seed"] == [run["lead_mae_s"]] and row["events"] == run["events"]
    assert row["baseline_lead_mae_s"]["mean"] == run["baseline_lead_mae_s"]
  assert "| 20-40 (searched 0–60 s) | alignvsr |" in out  # the tiny config searches 30 steps of 2 s
  checkpoints = os.path.join(workdir, "20-40", "default", "seed0", "checkpoints")
  before = sorted(os.listdir(checkpoints))
  again, _ = _bench("aligner_table.py", args, cli_env)
  assert again == rows and sorted(os.listdir(checkpoints)) == before


def test_aligner_table_searches_past_a_range_s_longest_lead():
  sys.path.insert(0, os.path.join(REPO, "bench"))
  try:
    import aligner_table
  finally:
    sys.path.pop(0)
  assert aligner_table.align_config("", 0, "180-300", "").input.max_lag_steps == 200        # 400 s already
  config = aligner_table.align_config("alignvsr", 1, "300-480", "")
  assert config.input.max_lag_steps == 264 and config.seed == 1 and config.model.cross_alignment  # 1.1 × 480 s
  assert (config.data.synthetic.lead_min_s, config.data.synthetic.lead_max_s) == (300.0, 480.0)


def test_aligner_cross_evaluates_each_furnace_s_runs_on_each_furnace(cli_env, tmp_path):
  runs, workdir = str(tmp_path / "aligners"), str(tmp_path / "cross")
  args = ["--runs", runs, "--workdir", workdir, "--furnaces", "20-40", "30-50", "--seeds", "0", "--also", "tiny"]
  rows, out = _bench("aligner_cross.py", args, cli_env)
  assert [(r["train"], r["test"]) for r in rows] == [("20-40", "20-40"), ("20-40", "30-50"), ("30-50", "20-40"),
                                                     ("30-50", "30-50")]
  for row in rows:
    trained = _summary(os.path.join(runs, row["train"], "default", "seed0"))
    tested = _summary(os.path.join(workdir, row["train"], row["test"], "seed0"))
    assert row["lead_mae_s"]["per_seed"] == [tested["lead_mae_s"]] and tested["steps"] == 0  # evaluated only
    if row["train"] == row["test"]:  # the same weights on the furnace they were trained on: the run's own figure
      assert tested["lead_mae_s"] == pytest.approx(trained["lead_mae_s"])
      assert tested["lead_median_true_s"] == trained["lead_median_true_s"]
    else:  # another furnace: other events
      assert tested["lead_median_true_s"] != trained["lead_median_true_s"]
  assert "| trained on \\ tested on | 20-40 | 30-50 |" in out and "| 30-50 | " in out
  checkpoints = os.path.join(runs, "20-40", "default", "seed0", "checkpoints")
  before = sorted(os.listdir(checkpoints))
  again, _ = _bench("aligner_cross.py", args, cli_env)
  assert again == rows and sorted(os.listdir(checkpoints)) == before


def test_pretrain_variants_table_holds_both_models_with_and_without_toc(cli_env, tmp_path):
  workdir = str(tmp_path / "variants")
  args = ["--workdir", workdir, "--variants", "default", "hdcid", "--seeds", "0", "--also", "tiny"]
  rows, out = _bench("pretrain_variants.py", args, cli_env)
  assert [r["model"] for r in rows] == ["default", "default + TOC", "hdcid", "hdcid + TOC"]
  for row in rows:
    name = row["model"].removesuffix(" + TOC")
    pretrained = _summary(os.path.join(workdir, name, "seed0", "pretrain"))
    transferred = _summary(os.path.join(workdir, name, "seed0", "transfer"))
    prefix = "toc_" if row["model"].endswith("TOC") else ""
    for key in ("v2c_bacc", "c2v_bacc", "seq_c2v_bacc", "warning_recall", "warning_false_per_h"):
      assert row[key]["per_seed"] == [transferred[prefix + key]], (row["model"], key)
    assert row["wall_s"]["mean"] == pretrained["wall_s"] + transferred["wall_s"]
  with open(os.path.join(workdir, "hdcid", "seed0", "pretrain", "checkpoints", "config.json")) as f:
    assert json.load(f)["model_name"] == "hdcid"
  assert "| never-trained model |" in out and "| hand-crafted warning (current steadiness) |" in out
