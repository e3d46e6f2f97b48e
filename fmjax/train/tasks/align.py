"""Contrastive alignment of video and current windows as a training task: model, batches and loss.

A training sample is a video window of W steps ending at a frame, and the current of the H + W steps
before it (`pipeline.step_sequence` with `history_steps=H`). The current windows ending 0, s, 2s, ..
steps earlier (s: `input.lag_stride`, up to `input.max_lag_steps`) are the video window's bag of
positives (MIL-NCE; `contrast.lag0` keeps lag 0 only), every other sample's windows its negatives,
and the windows at `contrast.hard_negative_lags` extra negatives. About `input.onset_share` of the
windows contain a visual onset by the video labels (`fmjax.data.onsets.training_samples`): those are
the windows whose lag can be told.

The AlignVSR-style variant (`configs/align.py:alignvsr`) adds two terms on the model's global
cross-attention (`align.CrossAlignment`: video steps over the history's current units): the attended
units under the same label-based contrast (`global_supervised`), and the local alignment of each video
step's attention to its own span shifted by the lag, over the same bag of candidate lags as MIL-NCE
(`local`; `fmjax.losses.local_alignment`). Neither changes what the search embeds.

The model is `Model(**config.model)` of the module `config.model_name` names (`fmjax.models.align`).
The loss is the weighted sum (`config.loss`) of the terms of `LOSS_TERMS`; the trainer
(fmjax.train.loop) owns devices, optimiser, checkpoints and logging, and the lead-time evaluation is
`fmjax.evals.lead_time`, which searches every lag with this job's predict functions (`embed`,
`temperature`, `pool_steps`) and its window geometry (`inputs`: `spec`, `max_lag`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fmjax.analysis import lag_search
from fmjax.data import fmf_format, onsets, pipeline, tfds_fmf
from fmjax.losses import contrastive, local_alignment
from fmjax.models import align
from fmjax.runtime import errors, registry
from fmjax.runtime.parallel import AXIS
from fmjax.train import objective, task


def mil_nce(outputs: dict, batch: dict) -> jax.Array:
  """MIL-NCE of each video window against its bag of current windows, with the hard negatives."""
  del batch
  return contrastive.mil_nce(outputs["video"], outputs["current"], outputs["temperature"], outputs["hard_negatives"],
                        axis_name=AXIS)


def supervised(outputs: dict, batch: dict) -> jax.Array:
  """Supervised contrastive loss of the video embeddings by the label of the window's last step."""
  return contrastive.supervised_contrastive(outputs["video"], batch["labels"][:, -1], outputs["temperature"], AXIS)


def global_supervised(outputs: dict, batch: dict) -> jax.Array:
  """AlignVSR's global alignment trained with the label-based contrast: SupCon, by the label of the
  window's last step, of the current's units as the video steps attend to them (`cross_align`)."""
  return contrastive.supervised_contrastive(align.unit_per_step(outputs["attended"]), batch["labels"][:, -1],
                                            outputs["temperature"], AXIS)


def local(outputs: dict, batch: dict) -> jax.Array:
  """AlignVSR's local alignment over the bag of training lags (`fmjax.losses.local_alignment`)."""
  del batch
  return local_alignment.local_alignment(outputs["attention"], outputs["lags"], outputs["local_radius"])


LOSS_TERMS = {"mil_nce": mil_nce, "supervised": supervised, "global_supervised": global_supervised, "local": local}
CROSS_TERMS = ("global_supervised", "local")  # the terms that need the model's `cross_align`


class Task(task.Task):
  """Everything job-specific about the aligner: its model, training windows and loss."""
  curve_keys = ("loss", "mil_nce", "temperature", "positive_cos", "lr")

  def __init__(self, config: ml_collections.ConfigDict, data: tfds_fmf.PreparedFmf):
    objective.check(config.loss, LOSS_TERMS, config.job)
    self.config, self.data = config, data
    inputs, contrast = config.input, config.contrast
    self.window_steps, self.max_lag = inputs.window_steps, inputs.max_lag_steps
    self.hard_negative_lags = tuple(contrast.hard_negative_lags)
    history_steps = max([self.max_lag, *self.hard_negative_lags])
    spec = dict(num_steps=inputs.window_steps, step_seconds=inputs.step_seconds,
                frames_per_step=inputs.frames_per_step, downsample_factor=inputs.downsample,
                history_steps=history_steps)
    self.inputs = dict(kind="sequence", spec=spec, max_lag=self.max_lag, worker_count=inputs.worker_count)
    self.train_lags = np.array([0]) if contrast.lag0 else np.arange(0, self.max_lag + 1, inputs.lag_stride)
    self.cross = bool(set(objective.active(config.loss)) & set(CROSS_TERMS))
    if self.cross and not config.model.get("cross_alignment", False):
      raise errors.ConfigError(f"config.loss turns on {[t for t in CROSS_TERMS if config.loss.get(t, 0)]}, which need "
                               "config.model.cross_alignment=True (see configs/align.py:alignvsr)")
    self.local_radius = int(contrast.get("local_radius", 0))
    self.model = registry.find(config.model_name, "Model")(**config.model)
    self.embed_fn = align.embed_fn(self.model)  # one object, so the jitted search compiles once
    # 'steps' encoders factorise: the search computes the current's per-step features once per history.
    self.pool_steps = align.unit_per_step if config.model.current_temporal == "steps" else None
    height, width = data.recordings[0].image_shape
    frames = (inputs.window_steps, inputs.frames_per_step, height // inputs.downsample, width // inputs.downsample, 3)
    self._example = {"video": jax.ShapeDtypeStruct((1, *frames), jnp.uint8),
                     "current": jax.ShapeDtypeStruct((1, history_steps + inputs.window_steps,
                                                      fmf_format.ROWS_PER_SECOND * inputs.step_seconds, 3),
                                                     jnp.float32)}

  # ------------------------------------------------------------------------------ batches

  def train_batches(self, host_batch: int, seed: int, start_step: int) -> Iterator[dict]:
    """This host's training batches from global step `start_step` on (same order as a fresh run)."""
    samples = onsets.training_samples(self.data.recordings, self.data.split("train"), self.inputs["spec"],
                                      self.config.input.onset_share)
    dataset = pipeline.make_dataset(self.data.recordings, samples, sample_kind="sequence", batch_size=host_batch,
                                    sample_spec=self.inputs["spec"], seed=seed, start_batch=start_step,
                                    worker_count=self.config.input.worker_count)
    return map(onsets.sequence_fields, dataset)

  # ------------------------------------------------------------------------------ model

  def _windows(self, current: jax.Array, lags) -> jax.Array:
    """(B, len(lags), W, ...) windows of a (B, T, ...) current (or its per-step features) ending `lags`
    steps before the video window's end."""
    return jax.vmap(lambda history: lag_search.windows_at(history, jnp.asarray(lags), self.window_steps))(current)

  def init(self, rng: jax.Array) -> dict:
    example = {k: jnp.zeros(v.shape, v.dtype) for k, v in self._example.items()}
    return self.model.init(rng, video=example["video"], current=self._windows(example["current"], self.train_lags[:1]))

  def init_aux(self, rng: jax.Array) -> None:
    return None

  def _current_embeddings(self, params, current: jax.Array, lags, steps: jax.Array | None = None) -> jax.Array:
    """(B, len(lags), e) embeddings of the current windows at `lags`; with 'steps' encoders the per-step
    features (`steps`, if given) are computed once per history and each window pools its own (as the
    search does)."""
    embed = functools.partial(self.model.apply, {"params": params}, method="embed")
    if self.pool_steps is not None:
      steps = embed("current_steps", current) if steps is None else steps
      windows = self._windows(steps, lags)                                      # (B, P, W, k)
      return self.pool_steps(windows.reshape(-1, *windows.shape[2:])).reshape(*windows.shape[:2], -1)
    windows = self._windows(current, lags)                                      # (B, P, W, R, 3)
    return embed("current", windows.reshape(-1, *windows.shape[2:])).reshape(*windows.shape[:2], -1)

  def outputs(self, params, batch: dict) -> dict:
    """What the loss terms read: the video embeddings (B, e), the current embeddings at the training
    lags (B, P, e) and at the hard-negative lags (B, N, e; None without any), and the temperature.
    With a term of CROSS_TERMS on, also the `cross_align` of the video steps over the history's units:
    the attention (B, W, T), the attended units (B, W, k), the training lags and `contrast.local_radius`;
    the per-step features are computed once for both, and the embeddings are those of `embed`."""
    embed = functools.partial(self.model.apply, {"params": params}, method="embed")
    cross, steps = {}, None
    if self.cross:
      video_steps, steps = embed("video_steps", batch["video"]), embed("current_steps", batch["current"])
      video = align.unit_per_step(video_steps)                                  # = embed('video', ...)
      attention, attended = self.model.apply({"params": params}, video_steps, steps, method="cross_align")
      cross = {"attention": attention, "attended": attended, "lags": self.train_lags, "local_radius": self.local_radius}
    else:
      video = embed("video", batch["video"])
    hard_negatives = None
    if self.hard_negative_lags:
      hard_negatives = self._current_embeddings(params, batch["current"], self.hard_negative_lags, steps)
    return {"video": video, "current": self._current_embeddings(params, batch["current"], self.train_lags, steps),
            "hard_negatives": hard_negatives, "temperature": self.model.apply({"params": params}, method="temperature"),
            **cross}

  def loss(self, params, model_state: dict, aux, batch: dict, rng: jax.Array) -> task.LossOutput:
    del rng
    outputs = self.outputs(params, batch)
    total, logged = objective.weighted_sum(LOSS_TERMS, self.config.loss, outputs, batch)
    positive_cos = jnp.max(jnp.einsum("bd,bpd->bp", outputs["video"], outputs["current"]), -1).mean()
    return total, ({**logged, "temperature": outputs["temperature"], "positive_cos": positive_cos}, model_state, aux)

  # ------------------------------------------------------------------------------ for evaluators

  def temperature(self, variables: dict) -> jax.Array:
    return self.model.apply(variables, method="temperature")

  def predict_fns(self) -> dict:
    """`embed` (variables, modality, windows) -> unit embeddings (the lag search's apply-fn), `temperature`,
    and with 'steps' current encoders `pool_steps` (per-step features -> a window's embedding)."""
    fns = {"embed": self.embed_fn, "temperature": self.temperature}
    if self.pool_steps is not None:
      fns["pool_steps"] = self.pool_steps
    return fns
