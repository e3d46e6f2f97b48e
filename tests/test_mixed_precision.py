"""Mixed precision: a bfloat16 compute dtype (`model.dtype`) against float32, and bfloat16 training on a CPU.

`model.dtype` is the dtype of the Dense/Conv/attention/LSTM matmuls only: parameters, optimiser
state, the VQ codebook and its EMA statistics (`vq_ema`), the encoders' output features, logits,
losses and metrics stay float32. The accelerator configs (`configs/pretrain.py:full`,
`configs/fmformer.py:accel`) set bfloat16; every other config keeps float32, where results are
bit-identical to a model without the field.

Tolerances, each with a margin of about 2x over what was measured on CPU (XLA) with these seeds,
the same float32 parameters in both forwards:
* FmFormer logits: max |bf16 - f32| <= 3% of max |f32 logit| (`LOGIT_RTOL`). Measured: 0.40-1.0%
  on the four official-weight fixtures (e.g. vicu_cls 0.0076 of 1.91; vicu_seg 0.067 of 6.73),
  0.18-1.4% on randomly initialised official-size and tiny models of every variant. Segmentation
  pixels keep their f32 argmax for >= 98% (`PIXEL_AGREEMENT`; measured >= 99.56%), clip classes
  wherever the f32 margin between the two classes exceeds twice the logit tolerance.
* Uni-Code (tiny config, a batch of 32 tiny-furnace sequences): the share of steps whose code is the
  same in both forwards >= 0.9 per modality (`CODE_AGREEMENT`; measured >= 0.977 tiny, >= 0.925 at
  the default sizes with a freshly initialised codebook, where near-ties are common); the batch's
  mean reconstruction error within 1% (measured <= 0.22%), and within 1% per sequence whose codes
  all agree (measured <= 0.36%); semantic features within 3% of their largest magnitude (measured
  <= 1.3%).
* Aligner embeddings (unit vectors): max |bf16 - f32| <= 0.03 (measured <= 0.014).
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.convert import torch_fmformer
from fmjax.models import align, fmformer, layers, unicode, vq
from fmjax.runtime import errors, parallel
from fmjax.train import optim, step
from fmjax.train.tasks import fmformer as fmformer_task
from fmjax.train.tasks import pretrain as pretrain_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import align as align_config
from configs import fmformer as fmformer_config
from configs import pretrain as pretrain_config

FIXTURES = os.path.join(REPO, "..", "shared", "fixtures", "fmformer_torch")
LOGIT_RTOL = 0.03
PIXEL_AGREEMENT = 0.98
CODE_AGREEMENT = 0.9
RECON_RTOL = 0.01
FEATURE_RTOL = 0.03
EMBEDDING_ATOL = 0.03


def relative_max_diff(want: np.ndarray, got: np.ndarray) -> float:
  want, got = np.asarray(want, np.float32), np.asarray(got, np.float32)
  return float(np.abs(got - want).max() / np.abs(want).max())


def check_logits(want: np.ndarray, got: np.ndarray) -> None:
  """bf16 logits `got` against f32 logits `want`: the tolerance, and the same classes where they are clear."""
  assert got.dtype == np.float32, got.dtype
  assert relative_max_diff(want, got) <= LOGIT_RTOL
  agree = want.argmax(-1) == got.argmax(-1)
  if want.ndim == 4:  # segmentation: per pixel
    assert agree.mean() >= PIXEL_AGREEMENT
  else:
    top2 = np.sort(want, -1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 2 * LOGIT_RTOL * np.abs(want).max()
    assert agree[clear].all()


def floating_leaves(tree) -> list:
  return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]


def all_float32_and_finite(tree) -> bool:
  leaves = floating_leaves(tree)
  return bool(leaves) and all(x.dtype == np.float32 and np.isfinite(np.asarray(x)).all() for x in leaves)


# ------------------------------------------------------------------------------------------- configs


def test_accelerator_variants_compute_in_bfloat16_and_the_others_in_float32():
  assert pretrain_config.get_config("full").model.dtype == "bfloat16"
  assert fmformer_config.get_config("accel").model.dtype == "bfloat16"
  tiny = fmformer_config.get_config("accel,tiny")
  assert tiny.model.dtype == "bfloat16" and tiny.model.dim == fmformer_config.get_config("tiny").model.dim
  assert fmformer_config.get_config("seg,accel").model.task == "segmentation"
  for config in (pretrain_config.get_config(), pretrain_config.get_config("tiny"), fmformer_config.get_config(),
                 fmformer_config.get_config("tiny"), align_config.get_config(), align_config.get_config("tiny")):
    assert config.model.dtype == "float32"
  assert fmformer.Model(**tiny.model).dtype == jnp.bfloat16


@pytest.mark.parametrize("build", [lambda d: unicode.UniCode(dtype=d), lambda d: align.Aligner(dtype=d),
                                   lambda d: fmformer.Model(dtype=d)], ids=["unicode", "align", "fmformer"])
@pytest.mark.parametrize("name", ["float33", "int32", None])
def test_a_bad_dtype_is_one_config_error(build, name):
  with pytest.raises(errors.ConfigError, match=r"^dtype=.* is not a (floating-point )?dtype") as raised:
    build(name)
  assert "\n" not in str(raised.value)


# ------------------------------------------------------------------------------------------- forwards


@pytest.mark.parametrize("name", ["vicu_cls", "vicu_seg", "video_cls", "current_cls"])
def test_official_weights_in_bfloat16_stay_within_tolerance_of_float32(name):
  path = os.path.join(FIXTURES, f"{name}.npz")
  if not os.path.exists(path):
    pytest.skip(f"official fixtures not found at {FIXTURES} (they live in ../shared beside the repo)")
  model, variables = torch_fmformer.convert(path)
  with np.load(path) as archive:
    inputs = {"video": archive["inputs/video"].transpose(0, 2, 3, 4, 1), "current": archive["inputs/current"]}
  want = np.asarray(jax.jit(model.apply)(variables, **inputs))
  got = np.asarray(jax.jit(model.clone(dtype=jnp.bfloat16).apply)(variables, **inputs))
  check_logits(want, got)


@pytest.mark.parametrize("variants", ["tiny", "seg,tiny"])
def test_fmformer_in_bfloat16_stays_within_tolerance_of_float32(variants):
  config = dict(fmformer_config.get_config(variants).model)
  model32, model16 = fmformer.Model(**config), fmformer.Model(**{**config, "dtype": "bfloat16"})
  rng = np.random.default_rng(0)
  inputs = {"video": rng.integers(0, 256, (4, *model32.example_shape("video"))).astype(np.uint8),
            "current": (10000 + 2000 * rng.standard_normal((4, *model32.example_shape("current")))).astype(np.float32)}
  variables = jax.jit(model32.init)(jax.random.PRNGKey(0), **inputs)
  want = np.asarray(jax.jit(model32.apply)(variables, **inputs))
  check_logits(want, np.asarray(jax.jit(model16.apply)(variables, **inputs)))


@pytest.fixture(scope="module")
def pretrain_tiny(tiny_job):
  def make(dtype: str):
    config = tiny_job("pretrain")
    config.model.dtype = dtype
    return config
  return make


def test_unicode_in_bfloat16_picks_the_same_codes_and_reconstructs_alike(pretrain_tiny, seed=0):
  task = pretrain_task.Task.prepare(pretrain_tiny("float32"))
  model32, model16 = task.eval_model, task.eval_model.clone(dtype="bfloat16")
  batch = next(iter(task.train_batches(32, 0, 0)))
  inputs = dict(video=batch["video"], current=batch["current"])
  variables = jax.jit(model32.init)(jax.random.PRNGKey(seed), **inputs)
  want = jax.device_get(jax.jit(model32.apply)(variables, **inputs))
  got = jax.device_get(jax.jit(model16.apply)(variables, **inputs))
  assert {k for k, x in got.items() if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != np.float32} == set()
  for m in unicode.MODALITIES:
    same = want[f"codes_{m}"] == got[f"codes_{m}"]
    assert same.mean() >= CODE_AGREEMENT, (m, same.mean())
    recon_want, recon_got = want[f"recon_{m}"], got[f"recon_{m}"]
    assert abs(recon_got.mean() - recon_want.mean()) <= RECON_RTOL * recon_want.mean()
    agreeing = same.all(1)
    assert agreeing.any()
    assert np.all(np.abs(recon_got - recon_want)[agreeing] <= RECON_RTOL * recon_want[agreeing])
    assert relative_max_diff(want[f"semantic_{m}"], got[f"semantic_{m}"]) <= FEATURE_RTOL
    codes, quantized = jax.jit(lambda v, x, m=m: model16.apply(v, m, x, method="encode"))(variables, inputs[m])
    np.testing.assert_array_equal(codes, got[f"codes_{m}"])
    assert quantized.dtype == np.float32


def test_aligner_in_bfloat16_gives_float32_unit_embeddings_close_to_float32():
  config = dict(align_config.get_config("tiny").model)
  rng = np.random.default_rng(0)
  video = rng.integers(0, 256, (8, 8, 1, 8, 8, 3)).astype(np.uint8)
  current = (10000 + 2000 * rng.standard_normal((8, 2, 8, 4, 3))).astype(np.float32)
  for temporal in (dict(), dict(video_temporal="transformer", current_temporal="flat")):
    model32 = align.Aligner(**{**config, **temporal})
    model16 = align.Aligner(**{**config, **temporal, "dtype": "bfloat16"})
    variables = jax.jit(model32.init)(jax.random.PRNGKey(0), video=video, current=current)
    want = jax.jit(model32.apply)(variables, video=video, current=current)
    got = jax.jit(model16.apply)(variables, video=video, current=current)
    for a, b in zip(want, got):
      assert b.dtype == np.float32
      assert float(np.abs(np.asarray(a) - np.asarray(b)).max()) <= EMBEDDING_ATOL, temporal
    np.testing.assert_allclose(np.linalg.norm(got[0], axis=-1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------------- training


def train_steps(task, config, batch: dict, steps: int) -> tuple:
  """(initial host state, final host state, the metrics of every step) of `steps` loop steps on `batch`."""
  tx, lr = optim.make(config.optimizer, config.num_train_steps)
  init = jax.tree.map(np.asarray, step.create_train_state(task, tx, jax.random.PRNGKey(config.seed)))
  par = parallel.DataParallel("shard_map", jax.devices()[:1])
  train_step = step.make_train_step(task, tx, lr, config.seed, par)
  state, history = par.put_state(jax.tree.map(np.copy, init)), []
  for device_batch in par.batches([batch] * steps):
    state, metrics = train_step(state, device_batch)
    history.append(par.to_host(metrics, parallel.REPLICATED))
  return init, jax.tree.map(np.asarray, par.get_state(state)), history


def check_float32_training(init, final, history) -> None:
  for part in ("params", "opt_state", "model_state", "aux"):
    leaves = floating_leaves(getattr(final, part))
    assert all(x.dtype == np.float32 for x in leaves), (part, {x.dtype for x in leaves})
  assert all_float32_and_finite(final.params) and all_float32_and_finite(final.opt_state)
  for metrics in history:
    assert metrics["finite"]
    assert all_float32_and_finite({k: v for k, v in metrics.items() if k != "finite"}), metrics
  assert max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(final.params),
                                                          jax.tree.leaves(init.params))) > 0  # it did train
  losses = [float(m["loss"]) for m in history]
  assert losses[-1] < losses[0], losses


def test_fmformer_trains_in_bfloat16_with_float32_state_and_metrics(tiny_job):
  config = tiny_job("fmformer", "accel,tiny")
  task = fmformer_task.Task.prepare(config)
  assert task.model.dtype == jnp.bfloat16
  batch = next(iter(task.train_batches(8, config.seed, 0)))
  check_float32_training(*train_steps(task, config, batch, steps=4))


def test_pretrain_trains_in_bfloat16_with_a_float32_codebook_and_losses(pretrain_tiny):
  config = pretrain_tiny("bfloat16")
  task = pretrain_task.Task.prepare(config)
  assert layers.compute_dtype(task.model.dtype) == jnp.bfloat16
  batch = next(iter(task.train_batches(8, config.seed, 0)))
  init, final, history = train_steps(task, config, batch, steps=4)
  check_float32_training(init, final, history)
  codebook = final.model_state[vq.COLLECTION]
  dtypes = {jax.tree_util.keystr(path[-1:]): x.dtype for path, x in jax.tree_util.tree_leaves_with_path(codebook)}
  assert dtypes == {"['embedding']": np.float32, "['ema_count']": np.float32, "['ema_weight']": np.float32,
                    "['unused_count']": np.int32}
  assert all_float32_and_finite(codebook)
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), codebook, init.model_state[vq.COLLECTION])
  assert max(jax.tree.leaves(moved)) > 0  # the EMA did update it
  for key in ("recon", "recon_video", "recon_current", "commitment", "cpc", "club", "code_matching", "perplexity",
              "code_agreement", "loss"):
    assert all(m[key].dtype == np.float32 for m in history), key
