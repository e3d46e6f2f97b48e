"""The benches that make issue 35's tables (bench/aligner_table.py, bench/pretrain_variants.py), run as
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
