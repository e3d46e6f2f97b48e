"""optax optimisers and learning-rate schedules named by the config."""

import ml_collections
import optax

from fmjax.runtime import errors


def schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """`config.schedule`: 'cosine' (linear warm-up then cosine to `end_lr`) or 'constant'."""
  warmup = min(config.warmup_steps, max(total_steps - 1, 0))
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, max(total_steps, warmup + 1), config.end_lr)
  if config.schedule == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), optax.constant_schedule(config.lr)],
                                [warmup])
  raise errors.ConfigError(f"optimizer.schedule={config.schedule!r} is not one of ('cosine', 'constant')")


def make(config: ml_collections.ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """`config.name` 'adamw' (default) or 'sgd'; optional global-norm clipping `grad_clip` (0 = off)."""
  lr = schedule(config, total_steps)
  if config.name == "adamw":
    tx = optax.adamw(lr, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
  elif config.name == "sgd":
    tx = optax.sgd(lr, momentum=config.b1)
  else:
    raise errors.ConfigError(f"optimizer.name={config.name!r} is not one of ('adamw', 'sgd')")
  if config.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
  return tx, lr


def default_config(**overrides) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(dict(name="adamw", lr=5e-4, end_lr=0.0, warmup_steps=50,
                                             schedule="cosine", b1=0.9, b2=0.999, weight_decay=0.05,
                                             grad_clip=1.0), **overrides))
