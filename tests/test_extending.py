"""docs/extending.md ("Adding a model, a loss term, a job or an evaluator"), followed: tests/toy/job.py
defines all four outside fmjax, and a config names them; `train_and_evaluate` runs them unchanged. And
tests/toy/evaluator.py, an evaluator outside fmjax, runs on fmjax's own FmFormer job with no change to it."""

import json
import os
import sys

import pytest

from fmjax.runtime import errors, registry
from fmjax.train import loop, writers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common


def toy_config(**loss):
  config = common.trainer_config("toy.job", model_name="toy.job")
  config.loss = loss or dict(cross_entropy=1.0, logit_l2=0.01)
  config.evals = dict(toy=dict(type="toy.job", samples=256))
  config.optimizer.update(lr=0.1, warmup_steps=0)
  config.update(num_train_steps=40, log_every=10, checkpoint_every=20)
  config.input.batch_size = 16
  return config


def test_a_job_model_loss_term_and_evaluator_from_outside_fmjax(tmp_path):
  summary = loop.train_and_evaluate(toy_config(), str(tmp_path))
  assert summary["toy_accuracy"] > 0.8  # the two levels are 2 sigma apart: chance is 0.5
  assert summary["steps"] == 40
  assert json.load(open(tmp_path / "summary.json"))["toy_accuracy"] == summary["toy_accuracy"]
  records = [r for r in writers.read_metrics(str(tmp_path)) if r["split"] == "train"]
  assert [r["step"] for r in records] == [10, 20, 30, 40]
  last = records[-1]
  assert last["loss"] == pytest.approx(last["cross_entropy"] + 0.01 * last["logit_l2"], rel=1e-5)
  page = open(tmp_path / "report.md").read()
  assert "## Toy evaluation" in page and "## Training curves" in page


def test_a_weight_of_zero_drops_the_term(tmp_path):
  loop.train_and_evaluate(toy_config(cross_entropy=1.0, logit_l2=0.0), str(tmp_path))
  last = [r for r in writers.read_metrics(str(tmp_path)) if r["split"] == "train"][-1]
  assert "logit_l2" not in last and "accuracy" not in last
  assert last["loss"] == last["cross_entropy"]


def test_names_that_are_not_modules_are_config_errors(tmp_path):
  with pytest.raises(errors.ConfigError, match="no module fmjax.train.tasks.nonesuch"):
    registry.find("nonesuch", "Task")
  with pytest.raises(errors.ConfigError, match="fmjax.analysis.heads has no Evaluator"):
    registry.find("fmjax.analysis.heads", "Evaluator")
  with pytest.raises(errors.ConfigError, match="unknown term.*hinge"):
    loop.train_and_evaluate(toy_config(cross_entropy=1.0, hinge=1.0), str(tmp_path))


def test_an_evaluator_setting_it_does_not_take_is_a_config_error(tmp_path):
  config = toy_config()
  config.evals.toy.samples_per_class = 3
  with pytest.raises(errors.ConfigError, match=r"evals.toy: the 'toy.job' evaluator takes no setting\(s\) "
                                               r"\['samples_per_class'\]; it takes \['samples'\]"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_an_evaluator_from_outside_fmjax_runs_on_an_existing_job(tiny_job, tmp_path):
  """The toy evaluator on the FmFormer job, beside the job's own classification evaluator on the same clips:
  two ways to the same accuracy."""
  config = tiny_job("fmformer", "tiny")
  stride = config.evals.classification.stride
  config.evals.classification.max_clips = 0
  with config.unlocked():
    config.evals.toy = dict(type="toy.evaluator", stride=stride, batch_size=16)
  summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary["toy_clips"] == summary["eval_clips"] > 0
  assert summary["toy_clip_accuracy"] == pytest.approx(summary["acc"], abs=1e-12)


def test_an_evaluator_needing_a_predict_function_the_job_lacks_is_a_config_error(tiny_job, tmp_path):
  config = tiny_job("fmformer", "tiny")
  with config.unlocked():
    config.evals = dict(probes=dict(type="probes"))
  with pytest.raises(errors.ConfigError, match=r"evals.probes: the 'probes' evaluator needs the predict function\(s\) "
                                               r"\['codebooks', 'encode', 'init'\], which this job does not offer "
                                               r"\(it offers \['logits'\]\)"):
    loop.train_and_evaluate(config, str(tmp_path))
