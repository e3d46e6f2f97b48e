"""H-DCID (`configs/pretrain.py:hdcid`, fmjax.models.hdcid): two codebooks, level 2 on the level-1 specific
features with no stop-gradient, the warm-up and the level-2 CLUB start, the evaluators on both levels."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from device_steps import max_abs_diff, steps_per_layout

from configs import pretrain as pretrain_config
from fmjax.analysis import heads
from fmjax.evals import sequences
from fmjax.models import hdcid, unicode
from fmjax.runtime import errors
from fmjax.runtime.parallel import AXIS
from fmjax.train import optim, step
from fmjax.train.tasks import pretrain

pytestmark = pytest.mark.stack  # also run on Colab's versions (.ci/run, setup.cfg)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVEL2_MODULES = ("semantic2_", "specific2_", "decoders2_", "cpc2")


def test_config_variants():
  tiny = pretrain_config.get_config("hdcid,tiny")
  assert tiny.model_name == "hdcid" and tiny.model.num_codes2 == 12 and tiny.model.num_codes == 16
  assert tiny.num_train_steps == pretrain_config.get_config("tiny").num_train_steps
  assert dict(tiny.hdcid.loss) == {"recon": 1.0, "commitment": 1.0, "cpc": 1.0, "club": 0.1}
  assert (tiny.hdcid.weight, tiny.hdcid.warmup_fraction, tiny.hdcid.club_from_fraction) == (0.3, 0.6, 0.6)
  default, full = pretrain_config.get_config("hdcid"), pretrain_config.get_config("hdcid,full")
  assert default.model.num_codes2 == full.model.num_codes2 == 400 and full.num_train_steps == 20000
  assert "hdcid" not in pretrain_config.get_config("tiny") and pretrain_config.get_config().model_name == "unicode"
  with pytest.raises(errors.ConfigError, match="unknown pretrain variant"):
    pretrain_config.get_config("hdcid,deep")


@pytest.fixture(scope="module")
def config(tiny_job):
  return tiny_job("pretrain", "hdcid,tiny")


@pytest.fixture(scope="module")
def task(config):
  return pretrain.Task.prepare(config)


@pytest.fixture(scope="module")
def batch(task, config):
  return next(task.train_batches(8, config.seed, 0))


@pytest.fixture(scope="module")
def variables(task):
  return jax.jit(task.init)(jax.random.PRNGKey(0))


def _inputs(batch):
  return {"video": jnp.asarray(batch["video"]), "current": jnp.asarray(batch["current"])}


def _level1(tree: dict) -> dict:
  return {k: v for k, v in tree.items() if not k.startswith(LEVEL2_MODULES) and k != "codebook2"}


@pytest.mark.slow  # compiles the model's update or the task's loss and its gradient (~10-15 s each)
def test_two_codebooks_each_with_its_own_state_level1_updated_as_unicode(task, variables, batch):
  state = variables["vq_ema"]
  assert state["codebook"]["embedding"].shape == (16, 16) and state["codebook2"]["embedding"].shape == (12, 16)
  assert set(state["codebook"]) == set(state["codebook2"]) == {"embedding", "ema_count", "ema_weight", "unused_count"}
  model = task.eval_model
  rngs = {"codebook": jax.random.PRNGKey(3)}
  _, updated = model.apply(variables, **_inputs(batch), update=True, mutable=["vq_ema"], rngs=rngs)
  fields = {k: getattr(model, k) for k in unicode.UniCode.__dataclass_fields__ if k not in ("parent", "name")}
  level1 = {"params": _level1(variables["params"]), "vq_ema": _level1(variables["vq_ema"])}
  _, alone = unicode.UniCode(**fields).apply(level1, **_inputs(batch), update=True, mutable=["vq_ema"], rngs=rngs)
  for k, v in alone["vq_ema"]["codebook"].items():
    np.testing.assert_array_equal(updated["vq_ema"]["codebook"][k], v, err_msg=k)
  assert np.max(np.abs(updated["vq_ema"]["codebook2"]["ema_weight"] - state["codebook2"]["ema_weight"])) > 0


def test_level2_reads_the_level1_specific_features_only(task, variables, batch):
  model = task.eval_model
  forward = jax.jit(lambda variables: model.apply(variables, **_inputs(batch)))
  out = forward(variables)
  again = jax.jit(functools.partial(model.apply, method="level2"))(variables, out["specific_video"],
                                                                     out["specific_current"])
  for k in out["level2"]:
    np.testing.assert_array_equal(out["level2"][k], again[k], err_msg=k)
  params = dict(variables["params"])
  params["semantic_current"] = jax.tree.map(lambda p: p + 0.5, params["semantic_current"])
  perturbed = forward({**variables, "params": params})
  assert np.max(np.abs(perturbed["semantic_current"] - out["semantic_current"])) > 1e-3
  for k in out["level2"]:
    np.testing.assert_array_equal(out["level2"][k], perturbed["level2"][k], err_msg=k)


@pytest.mark.slow  # compiles the model's update or the task's loss and its gradient (~10-15 s each)
def test_level2_losses_reach_the_level1_specific_encoders_not_the_semantic_ones(task, variables, batch):
  def level2_loss(params):
    out = task.eval_model.apply({**variables, "params": params}, **_inputs(batch))["level2"]
    return out["recon_video"].mean() + out["recon_current"].mean() + out["commitment"] + out["cpc"]

  grads = jax.jit(jax.grad(level2_loss))(variables["params"])
  norm = lambda name: float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(grads[name])))
  assert norm("specific_video") > 0 and norm("specific_current") > 0  # no stop_gradient between the levels
  assert norm("semantic_video") == norm("semantic_current") == 0
  assert norm("semantic2_video") > 0


@pytest.fixture(scope="module")
def loss_at(task, config, batch):
  """loss_at(step) -> (total, logged, new aux, grads) of the task's loss with aux['step'] = step, from the
  initial state; one device (vmap over a batch axis of 1 for the collectives)."""
  tx, _ = optim.make(config.optimizer, config.num_train_steps)
  state = step.create_train_state(task, tx, jax.random.PRNGKey(config.seed))

  def one(aux, batch):
    (total, (logged, _, new_aux)), grads = jax.value_and_grad(task.loss, has_aux=True)(
        state.params, state.model_state, aux, batch, jax.random.PRNGKey(1))
    return total, logged, new_aux, grads

  apply = jax.jit(jax.vmap(one, in_axes=(None, 0), axis_name=AXIS))
  batched = jax.tree.map(lambda x: jnp.asarray(x)[None], batch)

  def at(step_value: int):
    aux = {**state.aux, "step": jnp.asarray(step_value, jnp.int32)}
    return (*jax.tree.map(lambda x: np.asarray(x[0]), apply(aux, batched)), state.aux)
  return at


@pytest.mark.slow  # compiles the model's update or the task's loss and its gradient (~10-15 s each)
def test_warmup_then_level2_at_its_weight(task, config, loss_at):
  assert (task.warmup, task.club_from) == (4, 4)  # round(0.6 * 6)
  l1 = lambda logged: sum(w * logged[k] for k, w in config.loss.items() if w)
  for step_value in (task.warmup, task.warmup + 2):
    total, logged, aux, _, _ = loss_at(step_value)
    level2 = sum(w * logged[f"l2_{k}"] for k, w in config.hdcid.loss.items())
    assert logged["l2_loss"] == pytest.approx(level2, rel=1e-5) and "l2_code_matching" not in logged
    assert total == pytest.approx(l1(logged) + 0.3 * level2, rel=1e-5) and logged["loss"] == total
    assert logged["level2_on"] == 1 and aux["step"] == step_value + 1
  total, logged, aux, grads, _ = loss_at(task.warmup - 1)
  assert total == pytest.approx(l1(logged), rel=1e-5) and logged["level2_on"] == 0 and aux["step"] == task.warmup
  assert np.isfinite(logged["l2_loss"]) and logged["perplexity2"] > 0 and 0 <= logged["code_agreement2"] <= 1
  for name in (k for k in grads if k.startswith(LEVEL2_MODULES)):
    assert all(np.all(g == 0) for g in jax.tree.leaves(grads[name])), name  # level 2 off: weight 0
  assert any(np.any(g != 0) for g in jax.tree.leaves(grads["semantic_video"]))


@pytest.mark.slow  # compiles the model's update or the task's loss and its gradient (~10-15 s each)
def test_level2_club_nets_fitted_only_from_club_from(task, loss_at):
  moved = lambda aux, before: max_abs_diff(aux["level2"]["params"], before["level2"]["params"])
  *_, aux, _, before = loss_at(task.club_from - 1)
  assert moved(aux, before) == 0
  *_, aux, _, before = loss_at(task.club_from)
  assert moved(aux, before) > 0
  level1 = lambda tree: jax.tree.leaves(tree["params"])
  assert all(np.any(a != b) for a, b in zip(level1(aux), level1(before)))  # level 1's nets fitted throughout


def test_step_vectors_concatenate_the_levels_and_the_sequence_head_equals_one_joint_table():
  rng = np.random.default_rng(0)
  t1, t2 = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32)
  codes = {"codes_video": rng.integers(0, 5, (12, 6)), "codes2_video": rng.integers(0, 4, (12, 6))}
  vectors = sequences.level_vectors((t1, t2), codes, "video")
  assert vectors.shape == (12, 6, 5)
  np.testing.assert_array_equal(vectors[3, 2], np.concatenate([t1[codes["codes_video"][3, 2]],
                                                               t2[codes["codes2_video"][3, 2]]]))
  # the two-level head against the one-level head on the joint table of every (code1, code2) pair
  joint = np.concatenate([np.repeat(t1, 4, 0), np.tile(t2, (5, 1))], -1)
  joint_codes = codes["codes_video"] * 4 + codes["codes2_video"]
  labels = jnp.asarray(rng.integers(0, 2, 12))
  levels = ((jnp.asarray(t1), jnp.asarray(t2)), (jnp.asarray(codes["codes_video"]), jnp.asarray(codes["codes2_video"])))
  two = heads.fit_sequences(*levels, labels, jax.random.PRNGKey(0), steps=20)
  one = heads.fit_sequences(jnp.asarray(joint), jnp.asarray(joint_codes), labels, jax.random.PRNGKey(0), steps=20)
  for k in one:
    np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-5, err_msg=k)
  np.testing.assert_array_equal(heads.predict_sequences(two, *levels),
                                heads.predict_sequences(one, jnp.asarray(joint), jnp.asarray(joint_codes)))


@pytest.mark.slow
def test_same_state_and_step_counter_on_1_and_4_devices(task, config, tiny_job, four_devices):
  """The loop's train step under both wrappers on 1 and 4 devices: the same parameters, both codebooks, both
  levels' CLUB nets and the step counter (an int in the aux state)."""
  sgd = tiny_job("pretrain", "hdcid,tiny")
  sgd.optimizer.update(name="sgd", lr=0.1, warmup_steps=0)  # as test_pretrain's: SGD compares the gradients
  batches = task.train_batches(8, config.seed, 0)
  init, after = steps_per_layout(task, sgd, [next(batches) for _ in range(3)])
  reference, _ = after["shard_map", 1]
  assert max_abs_diff(reference.model_state["vq_ema"]["codebook2"], init.model_state["vq_ema"]["codebook2"]) > 1e-3
  for layout, (state, metrics) in after.items():
    assert metrics["finite"] and int(state.aux["step"]) == 3, layout
    assert max_abs_diff(state.params, reference.params) <= 1e-5, layout
    assert max_abs_diff(state.model_state, reference.model_state) <= 1e-5, layout
    assert max_abs_diff(state.aux, reference.aux) <= 1e-5, layout


@pytest.mark.slow
def test_cli_hdcid_pretrain_then_transfer(cli_env, tmp_path):
  """`configs/pretrain.py:hdcid,tiny` through the command line, resumed, then the transfer job on it."""
  workdir = str(tmp_path / "hdcid")
  command = [sys.executable, "launch/main.py", "--config=configs/pretrain.py:hdcid,tiny", f"--workdir={workdir}"]
  first = subprocess.run([*command, "--config.num_train_steps=3"], cwd=REPO, env=cli_env, capture_output=True,
                         text=True, check=False)
  assert first.returncode == 0, first.stderr[-3000:]
  saved_step = lambda n: ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(n), "default"))
  assert int(saved_step(3)["aux"]["step"]) == 3
  resumed = subprocess.run(command, cwd=REPO, env=cli_env, capture_output=True, text=True, check=False)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["steps"] == 6
  for key in ("perplexity", "perplexity2", "codes_used2", "code_agreement2", "recon2_video", "v2c_bacc",
              "c2v_bacc", "warning_recall"):
    assert key in summary, key
  assert 1 <= summary["codes_used2"] <= 12
  saved = saved_step(6)
  assert int(saved["aux"]["step"]) == int(saved["step"]) == 6  # the counter went on from the resumed 3
  transfer = str(tmp_path / "transfer")
  result = subprocess.run([sys.executable, "launch/main.py", "--config=configs/transfer.py:tiny",
                           f"--config.init_from={workdir}", f"--workdir={transfer}"], cwd=REPO, env=cli_env,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.load(open(os.path.join(transfer, "summary.json")))
  assert {"v2c_bacc", "c2v_bacc", "toc_v2c_bacc", "warning_recall"} <= set(summary)


def test_hdcid_is_a_model_a_saved_run_may_name():
  assert pretrain.registry.check_saved("hdcid", "Model", "config.json", "model_name") == "hdcid"
  assert hdcid.Model is hdcid.HDCID
