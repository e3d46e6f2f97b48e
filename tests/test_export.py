"""The accelerator programs, exported for TPU and for GPU with `jax.export` (no device needed): the lowered
modules hold no host callback, no loop from the CPU attention kernel (the model's `attention='auto'` lowers to
XLA's attention there), and bfloat16 matmuls where the config asks for them."""

import os
import re
import sys

import jax
import jax.numpy as jnp
import pytest
from jax import export

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fmformer_bench

from configs import common
from configs import fmformer as fmformer_config
from configs import pretrain as pretrain_config
from fmjax.models import encoders
from fmjax.runtime import (
  parallel,
  registry,
)
from fmjax.train import optim, step
from fmjax.train.tasks import fmformer as fmformer_task

pytestmark = pytest.mark.stack  # also run on Colab's versions (.ci/run, setup.cfg)

PLATFORMS = ("tpu", "cuda")


def abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def summarise(exported: export.Exported) -> dict:
  text = exported.mlir_module()
  return {"platforms": exported.platforms, "loops": text.count("stablehlo.while"),
          "custom_calls": set(re.findall(r'call_target_name = "([^"]+)"', text)),
          "host_callbacks": re.findall(r'call_target_name = "([^"]*callback[^"]*)"', text, re.IGNORECASE),
          "bf16_matmuls": len(re.findall(r"stablehlo\.dot_general.*bf16", text))}


def exported_train_step(config, task, batch: dict) -> dict:
  """The trainer's own step (`step.make_train_step`) of `task`, exported for `batch`'s shapes."""
  tx, lr = optim.make(config.optimizer, config.num_train_steps)
  batch = abstract(batch)
  state = jax.eval_shape(lambda: step.create_train_state(task, tx, jax.random.PRNGKey(0)))
  train_step = step.make_train_step(task, tx, lr, config.seed, parallel.DataParallel("shard_map", jax.devices()[:1]))
  return summarise(export.export(train_step, platforms=PLATFORMS)(state, batch))


def fmformer_train_step(attention: str) -> dict:
  """The step of `configs/fmformer.py:accel` with `model.attention=attention`, exported."""
  config = fmformer_config.get_config("accel")
  config.model.attention = attention
  return exported_train_step(config, fmformer_task.Task(config, None), fmformer_bench.random_batch(8))


def test_fmformers_training_step_lowers_for_tpu_and_gpu_without_the_cpu_kernel():
  found = fmformer_train_step("auto")
  assert found["platforms"] == PLATFORMS
  assert found["loops"] == 0, "the CPU attention's batch-chunk loop reached an accelerator program"
  assert not found["host_callbacks"], found["custom_calls"]
  assert found["bf16_matmuls"] > 100  # accel: every Dense and attention product in bfloat16
  assert fmformer_train_step("cpu_chunked")["loops"] > 0  # forcing the CPU kernel shows in the module


@pytest.mark.parametrize("variant", ["accel", "seg,accel"])
def test_fmformers_prediction_lowers_for_tpu_and_gpu(variant):
  config = fmformer_config.get_config(variant)
  task = fmformer_task.Task(config, None)
  batch = abstract(fmformer_bench.random_batch(32))
  inputs = {name: batch[name] for name in task.model.inputs}
  variables = jax.eval_shape(lambda x: task.model.init(jax.random.PRNGKey(0), **x), inputs)
  predict = jax.jit(lambda v, x: task.model.apply(v, **x, train=False))
  found = summarise(export.export(predict, platforms=PLATFORMS)(variables, inputs))
  assert found["loops"] == 0 and found["bf16_matmuls"] > 50
  assert not found["host_callbacks"]


def test_the_pretrain_encoders_lower_for_tpu_and_gpu():
  """Uni-Code's semantic encoders (also the transfer job's and the aligner's), at `pretrain.py:full`'s width and
  dtype, forward and backward."""
  model_config = pretrain_config.get_config("full").model
  encoder = encoders.TemporalTransformer(model_config.depth, model_config.heads, dtype=model_config.dtype)
  x = jax.ShapeDtypeStruct((256, 10, model_config.dim), jnp.float32)
  params = jax.eval_shape(lambda x: encoder.init(jax.random.PRNGKey(0), x), x)
  grad = jax.jit(jax.grad(lambda p, x: encoder.apply(p, x).sum()))
  found = summarise(export.export(grad, platforms=PLATFORMS)(params, x))
  assert found["loops"] == 0 and found["bf16_matmuls"] > 0


@pytest.mark.parametrize("job, variant, loops", [("pretrain", "full", 6), ("pretrain", "hdcid,full", 12),
                                                ("align", "", 0), ("align", "alignvsr", 0), ("align", "meanframes", 0)])
def test_the_other_jobs_training_steps_lower_for_tpu_and_gpu(job, variant, loops, tiny_job):
  """pretrain.py:full (Uni-Code, bfloat16, batch 256), its H-DCID form and align (also AlignVSR-style and with
  averaged frames): the trainer's step at the accelerator config's model and batch, on the tiny furnace's data
  (only the batch's shapes matter to an export). The pretrain step's only loops are its CPC LSTMs' scans (video
  and current, forward and backward) and the CLUB estimator's steps; H-DCID's level 2 has as many again."""
  config = tiny_job(job, variant)
  data_dir = config.data.data_dir
  config.data = common.data_config(**common.TINY_DATA)
  config.data.data_dir = data_dir
  task = registry.find(config.job, "Task").prepare(config)
  found = exported_train_step(config, task, next(iter(task.train_batches(config.input.batch_size, 0, 0))))
  assert found["loops"] == loops
  assert not found["host_callbacks"]
  assert (found["bf16_matmuls"] > 100) == (config.model.dtype == "bfloat16")
