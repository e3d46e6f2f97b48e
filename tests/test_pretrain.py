"""Uni-Code pretraining job: 1 vs 4 devices under both wrappers, the run's files, restore -> same outputs."""

import json
import os
import shutil
import signal

import crash  # tests/ is on the path
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from device_steps import max_abs_diff, steps_per_layout

from configs import pretrain as pretrain_config
from fmjax.data import fmf_format, ground_truth
from fmjax.evals import base as eval_base
from fmjax.evals import sequences
from fmjax.runtime import errors, parallel
from fmjax.runtime.parallel import REPLICATED, SHARDED
from fmjax.train import loop
from fmjax.train.tasks import pretrain as pretrain_task

pytestmark = pytest.mark.stack  # also run on Colab's versions (.ci/run, setup.cfg)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUMMARY_KEYS = ("perplexity", "codes_used", "code_agreement", "code_agreement_chance", "recon_video",
                "recon_current", "v2c_acc", "c2v_acc", "wall_s", "peak_rss_mb",
                "code_mi_bits", "code_mi_null_bits", "code_mi_z", "code_mi_p", "majority_rate", "code_mi_truth_bits",
                "current_shift_s",
                *(f"{b}{level}{p}_{m}" for b in ("", "baseline_") for level in ("", "seq_")
                  for p in ("v2c", "c2v", "v2v", "c2c") for m in ("acc", "bacc", "f1")))


@pytest.fixture(scope="module")
def make_config(tiny_job):
  return lambda **overrides: tiny_job("pretrain", **overrides)


@pytest.fixture(scope="module")
def three_steps(make_config, four_devices):
  """Host states after 3 steps on the same 3 batches of 8, per (wrapper, devices). SGD, so that
  parameters compare the synchronised gradients (AdamW's sign-like first steps amplify rounding)."""
  config = make_config()
  config.optimizer.update(name="sgd", lr=0.1, warmup_steps=0)
  task = pretrain_task.Task.prepare(config)
  batches = task.train_batches(8, config.seed, 0)
  return steps_per_layout(task, config, [next(batches) for _ in range(3)])


@pytest.mark.parametrize("a, b", [(("shard_map", 1), ("shard_map", 4)), (("pmap", 1), ("pmap", 4)),
                                  (("shard_map", 4), ("pmap", 4))])
def test_same_codebook_and_parameters_on_1_and_4_devices(three_steps, a, b):
  init, after = three_steps
  (state_a, metrics_a), (state_b, metrics_b) = after[a], after[b]
  assert metrics_a["finite"] and metrics_b["finite"]
  assert max_abs_diff(state_a.params, init.params) > 1e-4  # the steps did train
  codebook_a, codebook_b = state_a.model_state["vq_ema"], state_b.model_state["vq_ema"]
  assert max_abs_diff(codebook_a, init.model_state["vq_ema"]) > 1e-3  # and did move the codebook
  assert max_abs_diff(state_a.params, state_b.params) <= 1e-5
  assert max_abs_diff(codebook_a, codebook_b) <= 1e-5
  assert max_abs_diff(state_a.aux["params"], state_b.aux["params"]) <= 1e-5  # the CLUB nets, own optimiser
  assert max_abs_diff(state_a.aux["params"], init.aux["params"]) > 1e-5


@pytest.fixture(scope="module")
def run(pretrain_run):
  return pretrain_run


def _test_events(root: str) -> int:
  """How many events of the root's recordings have their visual onset in the test split (events/*.json)."""
  return sum(e["split"] == "test" for name in fmf_format.list_recordings(root)
             for e in ground_truth.load_events(root, name))


def test_run_writes_summary_report_and_checkpoints(run, make_config, tiny_root):
  workdir, summary = run
  assert set(SUMMARY_KEYS) <= set(summary), set(SUMMARY_KEYS) - set(summary)
  assert summary["steps"] == 6
  # The codebook figures against the restored model's own test codes, counted here with numpy.
  config = make_config()
  task, par, state = loop.restore(config, workdir)
  settings = config.evals.codebook
  variables = jax.device_get(par.get_state(state).variables())
  test = sequences.codes(loop.eval_context(task), eval_base.Shared(), par, "trained", variables, "test",
                         task.data.frame_stride(settings.stride_s), batch=settings.batch_size)
  video, current = np.asarray(test["codes_video"]).ravel(), np.asarray(test["codes_current"]).ravel()
  share = np.bincount(np.concatenate([video, current]), minlength=16) / (2 * video.size)
  used = share[share > 0]
  assert summary["perplexity"] == pytest.approx(float(np.exp(-np.sum(used * np.log(used)))), rel=1e-4)
  assert summary["codes_used"] == used.size and 1 < used.size <= 16
  assert summary["code_agreement"] == pytest.approx(float(np.mean(video == current)))
  chance = np.sum(np.bincount(video, minlength=16) * np.bincount(current, minlength=16)) / video.size ** 2
  assert summary["code_agreement_chance"] == pytest.approx(float(chance))
  assert summary["eval_sequences"] == len(test["labels"]) and summary["abnormal_share"] == pytest.approx(
      float(np.mean(test["labels"])))
  # the test split of the tiny furnace holds events: the warning's scoring path ran on them
  assert summary["warning_events"] == _test_events(tiny_root) > 0
  assert 0 <= summary["warning_recall"] <= 1
  report = open(os.path.join(workdir, "report.md")).read()
  assert "Codebook usage, video" in report and "Codebook usage, current" in report
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "6"))


def test_restored_checkpoint_gives_identical_outputs(run, make_config, tmp_path):
  workdir, summary = run
  again = loop.train_and_evaluate(make_config(eval_only=True, init_from=workdir), str(tmp_path / "eval"))
  for key in set(summary) - {"wall_s", "peak_rss_mb", "steps", "first_step_s"}:  # init_from loads weights, not the step
    assert again[key] == summary[key] or (np.isnan(again[key]) and np.isnan(summary[key])), key  # NaN: no events


def test_restore_gives_the_run_s_own_variables(run, make_config, tmp_path):
  """`loop.restore` (notebooks and analyses) holds the arrays of the last saved step, read here with orbax
  itself, and not the never-trained model's."""
  task, par, state = loop.restore(make_config(), run[0])
  restored = jax.device_get(par.get_state(state))
  path = os.path.join(run[0], "checkpoints", "6", "default")
  saved = ocp.StandardCheckpointer().restore(path)  # orbax's own reading: plain arrays, no target from fmjax
  assert max_abs_diff(restored.params, saved["params"]) == 0
  assert max_abs_diff(restored.model_state, saved["model_state"]) == 0 and int(saved["step"]) == 6
  _, _, untrained = loop.initial_state(make_config(), task)
  assert max_abs_diff(restored.params, untrained.params) > 1e-4
  with pytest.raises(errors.CheckpointError, match="no checkpoint to restore"):
    loop.restore(make_config(), str(tmp_path / "empty"))


def test_switched_off_terms_leave_no_trace(make_config):
  """Weight 0 drops a term: not logged, not in the loss, and the CLUB nets are not fitted."""
  config = make_config()
  config.loss.update(cpc=0.0, club=0.0, code_matching=0.0)
  task = pretrain_task.Task.prepare(config)
  batch = next(task.train_batches(4, 0, 0))
  rng = jax.random.PRNGKey(0)
  variables, aux = task.init(rng), task.init_aux(rng)
  state = {k: v for k, v in variables.items() if k != "params"}
  par = parallel.DataParallel("shard_map", jax.devices()[:1])
  loss = par.wrap(lambda p, s, a, b: task.loss(p, s, a, b, jax.random.PRNGKey(1))[1],
                  (REPLICATED, REPLICATED, REPLICATED, SHARDED), REPLICATED)
  metrics, _, new_aux = loss(variables["params"], state, aux, batch)
  assert not {"cpc", "cpc_acc_v2c", "club", "club_video", "club_nll_video", "code_matching"} & set(metrics)
  expected = metrics["commitment"] + metrics["recon_video"] + metrics["recon_current"]
  assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-6)
  assert max_abs_diff(new_aux, aux) == 0


def test_an_unknown_loss_term_is_a_config_error(make_config):
  config = make_config()
  with config.unlocked():
    config.loss.contrast = 1.0
  with pytest.raises(errors.ConfigError, match="unknown term.*contrast"):
    pretrain_task.Task.prepare(config)


# ------------------------------------------------------------------------------------------- transfer


def test_truth_information_by_hand():
  """Steps of 2 s; the truth's steadiness is lowered in seconds 2-3 and 6-7. Labels that follow it
  share 1 bit with it; labels independent of it share none."""
  from types import SimpleNamespace

  import handmade

  from fmjax.evals import codebook
  truth = {"steadiness": np.array([1, 1, .2, .2, 1, 1, .2, .2, 1, 1], np.float32)}
  data = SimpleNamespace(recordings=[handmade.recording()], truth=lambda r: truth)
  spec = {"num_steps": 1, "step_seconds": 2}
  codes = {"recording": np.zeros(4, int), "current_second": np.array([3, 5, 7, 9])}
  same = codebook.truth_information(data, spec, {**codes, "labels": np.array([[1], [0], [1], [0]])})
  independent = codebook.truth_information(data, spec, {**codes, "labels": np.array([[1], [1], [0], [0]])})
  assert same["code_mi_truth_bits"] == pytest.approx(1.0) and independent["code_mi_truth_bits"] == pytest.approx(0.0)
  data.truth = lambda r: None  # the real benchmark has no truth: no key
  assert codebook.truth_information(data, spec, {**codes, "labels": np.zeros((4, 1), int)}) == {}


def test_pairing_by_the_lead_reads_the_align_estimate(make_config, tmp_path):
  config = make_config()
  assert pretrain_task.current_shift(config.input) == 0
  align_run = tmp_path / "align"
  align_run.mkdir()
  (align_run / "summary.json").write_text(json.dumps({"lead_median_est_s": 7.6}))
  config.input.current_shift_from = str(align_run)
  task = pretrain_task.Task.prepare(config)
  assert task.inputs["spec"]["current_shift_s"] == 8
  first = lambda task: sequences.read(loop.eval_context(task), eval_base.Shared(), "test", stride=10, batch=16)[0]
  shifted, same_time = first(task), first(pretrain_task.Task.prepare(make_config()))
  # the same video sequences, each paired with the current sequence that ends 8 s earlier
  np.testing.assert_array_equal(shifted["video"], same_time["video"])
  np.testing.assert_array_equal(same_time["current_second"] - shifted["current_second"], 8)
  assert not np.array_equal(shifted["current"], same_time["current"])
  (align_run / "summary.json").write_text(json.dumps({"lead_mae_s": 3.0}))
  with pytest.raises(errors.ConfigError, match="holds no lead_median_est_s"):
    pretrain_task.current_shift(config.input)
  config.input.current_shift_from = str(tmp_path / "nowhere")
  with pytest.raises(errors.ConfigError, match="nowhere/summary.json is missing"):
    pretrain_task.current_shift(config.input)


@pytest.fixture(scope="module")
def make_transfer(tiny_job):
  return lambda init_from: tiny_job("transfer", init_from=init_from)


@pytest.fixture(scope="module")
def fmformer_current(tiny_job, tmp_path_factory):
  """A two-step configs/fmformer.py:current,tiny run on the same data: the supervised current-only model."""
  config = tiny_job("fmformer", "current,tiny", num_train_steps=2)
  config.evals.classification.update(stride=200)
  workdir = str(tmp_path_factory.mktemp("fmformer_current"))
  loop.train_and_evaluate(config, workdir)
  return workdir


def test_transfer_reports_both_directions_beside_the_baseline(run, make_transfer, fmformer_current, tiny_root,
                                                             tmp_path):
  config = make_transfer(run[0])
  config.evals.warning.fmformer_from = fmformer_current
  summary = loop.train_and_evaluate(config, str(tmp_path / "transfer"))
  pairs = ("v2c", "c2v", "v2v", "c2c")
  for pair in (*pairs, *(f"{b}{level}{p}" for b in ("", "toc_", "baseline_") for level in ("", "seq_") for p in pairs)):
    for metric in ("acc", "bacc", "f1", "fdr", "mdr", "precision"):
      assert 0 <= summary[f"{pair}_{metric}"] <= 1, (pair, metric)
  abnormal = summary["test_abnormal_share"]
  assert summary["majority_rate"] == pytest.approx(max(abnormal, 1 - abnormal))
  assert summary["warning_events"] == _test_events(tiny_root) > 0  # the tiny test split holds events
  for name in ("", "toc_", "baseline_", "fmformer_"):
    assert summary[f"{name}warning_false_per_h"] >= 0 and 0 <= summary[f"{name}warning_recall"] <= 1
    assert f"{name}warning_median_s" in summary
  report = open(tmp_path / "transfer" / "report.md").read()
  assert "Early warning from the current" in report and "supervised current-only FmFormer" in report
  assert "V->C head on TOC's codebook dimensions" in report
  assert f"{summary['warning_events']} events" in report
  assert os.path.isfile(tmp_path / "transfer" / "summary.json")
  assert "no pretraining v2c" in open(tmp_path / "transfer" / "report.md").read()


def test_warning_on_every_toc_dimension_is_the_plain_warning(run, make_transfer, tmp_path):
  """TOC keeping all D dimensions (in their order) is the identity: its head, alarms and figures are the
  plain head's. (The probes are left out: only the warning runs.)"""
  config = make_transfer(run[0])
  with config.unlocked():
    del config.evals["probes"]
  config.evals.warning.toc_dims = pretrain_config.get_config("tiny").model.dim
  summary = loop.train_and_evaluate(config, str(tmp_path / "all_dims"))
  for key in ("recall", "median_s", "false_per_h", "threshold", "smooth_steps"):
    np.testing.assert_equal(summary[f"toc_warning_{key}"], summary[f"warning_{key}"], err_msg=key)  # NaN == NaN


def test_warning_beside_a_model_that_is_not_a_current_only_fmformer_fails_clearly(run, make_transfer, tmp_path):
  config = make_transfer(run[0])
  config.evals.warning.fmformer_from = run[0]
  with pytest.raises(errors.CheckpointError, match="holds a 'pretrain' run, not an FmFormer run"):
    loop.train_and_evaluate(config, str(tmp_path / "out"))


def test_transfer_evaluates_the_run_on_its_own_data_unless_told_otherwise(run, make_transfer, tiny_root, capfd):
  """The README's transfer command (every data key at its default) on a run pretrained on another furnace
  (the tiny one: other knobs and seed, its own data_dir) evaluates it on that furnace, and says so; a data
  key given to the transfer job is the job's, the rest still the run's."""
  from ml_collections import ConfigDict

  from configs import transfer as transfer_config
  from fmjax.data import config as data_config
  from fmjax.train.tasks import transfer as transfer_task
  source = transfer_task.pretrain_config(run[0]).data
  readme = transfer_config.get_config().data
  data, taken = data_config.inherit(readme, source)
  assert data.to_dict() == source.to_dict() and {"data_dir", "synthetic.seed", "synthetic.fps"} <= set(taken)
  given = ConfigDict(readme.to_dict())
  given.root, given.synthetic.seed = "/elsewhere", 9
  data, taken = data_config.inherit(given, source)
  assert (data.root, data.synthetic.seed) == ("/elsewhere", 9) and "synthetic.seed" not in taken
  assert (data.data_dir, data.synthetic.fps, data.synthetic.recordings) == (source.data_dir, 1.0, 2)
  config = make_transfer(run[0])
  config.data = readme
  assert transfer_task.Task.prepare(config).data.root == tiny_root
  assert f"data of {run[0]}: " in capfd.readouterr().err


def test_transfer_without_a_pretrain_run_fails_clearly(make_transfer, tmp_path):
  with pytest.raises(errors.CheckpointError, match="no pretrain run there"):
    loop.train_and_evaluate(make_transfer(str(tmp_path / "nowhere")), str(tmp_path / "out"))


def test_transfer_from_a_mismatched_checkpoint_fails_clearly(run, make_transfer, tmp_path):
  source = tmp_path / "edited"
  shutil.copytree(run[0], source)
  saved = source / "checkpoints" / "config.json"
  config = json.loads(saved.read_text())
  config["model"]["dim"] *= 2  # a config the checkpoint was not made with
  saved.write_text(json.dumps(config))
  with pytest.raises(errors.CheckpointError, match="shape"):
    loop.train_and_evaluate(make_transfer(str(source)), str(tmp_path / "out"))


# ------------------------------------------------------------------------------------------- the user's path


@pytest.mark.slow
def test_killed_pretrain_resumes_to_the_same_summary(run, cli_env, tmp_path):
  """SIGKILL after a checkpoint, then during a save, then the same command: the uninterrupted run's figures
  (the shared in-process run, on one device as these). Through the CLI from another folder, with the
  default (relative) workdir and data dir ($FMJAX_DATA_DIR: the shared furnace)."""
  flags = [f"--config={os.path.join(REPO, 'configs', 'pretrain.py')}:tiny", "--config.num_devices=1"]
  checkpoints = tmp_path / "runs" / "pretrain_tiny" / "checkpoints"
  for kill in ("4:step", "6:save", ""):
    result = crash.run_cli(tmp_path, cli_env, *flags, kill=kill)
    assert result.returncode == (-signal.SIGKILL if kill else 0), result.stderr
    assert sorted(int(n) for n in os.listdir(checkpoints) if n.isdigit()) == ([3] if kill else [3, 6])
  assert "Traceback" not in result.stderr and f"resuming from step 3 of {checkpoints}" in result.stderr
  assert "an unfinished save" in result.stderr
  with open(checkpoints.parent / "summary.json", encoding="utf-8") as f:
    resumed = json.load(f)
  for key in set(run[1]) - {"wall_s", "peak_rss_mb", "first_step_s"}:
    assert resumed[key] == pytest.approx(run[1][key], abs=1e-6, nan_ok=True), key


def test_transfer_from_a_relative_init_from(run, make_transfer, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  summary = loop.train_and_evaluate(make_transfer(os.path.relpath(run[0], tmp_path)), "runs/transfer")
  assert 0 <= summary["v2c_acc"] <= 1
  assert os.path.isfile(tmp_path / "runs" / "transfer" / "summary.json")
  assert os.path.isfile(tmp_path / "runs" / "transfer" / "report.md")
