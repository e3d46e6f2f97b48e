"""FmFormer anomaly detection as a training task: model, batches and loss.

The model is `Model(**config.model)` of the module `config.model_name` names (`fmjax.models.fmformer`:
`model.variant` 'cross', 'video' or 'current'); the clips carry the inputs the model asks for
(`model.inputs`). `config.model.task` 'classification' learns one label per clip, 'segmentation'
the last frame's mask. The trainer (fmjax.train.loop) owns devices, optimiser, checkpoints and
logging. Evaluators get `logits` (the predict function) and `inputs` (clip geometry, the model's
input fields and the target: `label` or `mask`); the job's evaluation is `fmjax.evals.classification`.
"""

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from fmjax.data import pipeline, tfds_fmf
from fmjax.runtime import errors, registry
from fmjax.train import objective, task


def cross_entropy(outputs: dict, batch: dict) -> tuple[jax.Array, dict]:
  """Mean cross-entropy of this device's shard (per clip, or per pixel); the accuracy beside it."""
  logits, target = outputs["logits"], outputs["target"]
  value = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), target).mean()
  return value, {"accuracy": (logits.argmax(-1) == target).mean()}


LOSS_TERMS = {"cross_entropy": cross_entropy}


class Task(task.Task):
  """Everything job-specific about training an FmFormer model."""
  curve_keys = ("loss", "accuracy", "lr", "clips_per_s")

  def __init__(self, config: ml_collections.ConfigDict, data: tfds_fmf.PreparedFmf | None):
    """`data` None: a model and loss without batches (benchmarks, exports)."""
    objective.check(config.loss, LOSS_TERMS, config.job)
    self.config, self.data = config, data
    self.model = registry.find(config.model_name, "Model")(**config.model)
    self.segmentation = config.model.get("task") == "segmentation"
    self.target = "mask" if self.segmentation else "label"
    spec = dict(num_frames=config.input.num_frames, sampling_rate=config.input.sampling_rate,
                current_seconds=config.input.current_seconds, official_layout=config.input.official_layout)
    self.inputs = dict(kind="clip", spec=spec, fields=tuple(self.model.inputs), target=self.target,
                       worker_count=config.input.worker_count)
    if data is not None:
      check_data(config, self.model, data)

  # ------------------------------------------------------------------------------ batches

  def device_fields(self, batch: dict) -> dict:
    """The fields the step reads: the model's inputs, the clip label, and the mask for segmentation."""
    keep = {"label": batch["label"].astype(np.int32), **{name: batch[name] for name in self.model.inputs}}
    if self.segmentation:
      keep["mask"] = batch["mask"].astype(np.int32)
    return keep

  def train_batches(self, host_batch: int, seed: int, start_step: int) -> Iterator[dict]:
    """This host's training batches from global step `start_step` on (same order as a fresh run)."""
    dataset = pipeline.make_dataset(self.data.recordings, self.data.split("train"), sample_kind="clip",
                                    batch_size=host_batch, sample_spec=self.inputs["spec"], seed=seed,
                                    start_batch=start_step, worker_count=self.config.input.worker_count)
    return map(self.device_fields, dataset)

  # ------------------------------------------------------------------------------ model

  def _inputs(self, batch: dict) -> dict:
    return {name: batch[name] for name in self.model.inputs}

  def init(self, rng: jax.Array) -> dict:
    return self.model.init(rng, **example_inputs(self.model))

  def init_aux(self, rng: jax.Array) -> None:
    return None

  def loss(self, params, model_state: dict, aux, batch: dict, rng: jax.Array) -> task.LossOutput:
    del rng
    logits, new_state = self.model.apply({"params": params, **model_state}, **self._inputs(batch), train=True,
                                         mutable=list(model_state))
    outputs = {"logits": logits, "target": batch[self.target]}
    total, logged = objective.weighted_sum(LOSS_TERMS, self.config.loss, outputs, batch)
    return total, (logged, dict(new_state), aux)

  def logits(self, variables: dict, batch: dict) -> jax.Array:
    """Class logits of a batch: (B, classes), or (B, H, W, classes) for segmentation."""
    return self.model.apply(variables, **self._inputs(batch), train=False)

  def predict_fns(self) -> dict:
    return {"logits": self.logits}


def example_inputs(model: nn.Module) -> dict[str, jax.Array]:
  """Zeros shaped like one sample of each of the model's inputs (what `init` needs: shapes only)."""
  dtypes = {"video": jnp.uint8, "current": jnp.float32}
  return {name: jnp.zeros((1,) + model.example_shape(name), dtypes[name]) for name in model.inputs}


def check_data(config: ml_collections.ConfigDict, model: nn.Module, data: tfds_fmf.PreparedFmf) -> None:
  """A ConfigError where the data does not suit the model: frames of another size, or class-level
  labels for segmentation."""
  height, width = data.recordings[0].image_shape
  if "video" in model.inputs and not height == width == config.model.image_size:
    raise errors.ConfigError(f"model.image_size={config.model.image_size} but the data's frames are "
                             f"{height}x{width}: set --config.model.image_size={height} (square frames only)")
  if config.model.get("task") == "segmentation" and not data.has_masks:
    raise errors.ConfigError(f"model.task='segmentation' needs pixel masks, but {data.root} has class-level "
                             "labels (one per frame): use a classification variant")
