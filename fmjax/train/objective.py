"""A loss as a weighted sum of named terms (kauldron style).

A term is a plain function `term(outputs, batch)` of a model's outputs and the batch, returning a
scalar or `(scalar, extra metrics)`. `weighted_sum` adds `weight * term` over the terms whose weight
in `weights` is not 0 and logs each term under its name; a term of weight 0 is not called, so
under `jit` nothing that only it needs is computed. `active` tells a task which terms are on, for
work a term needs beyond the forward pass (e.g. fitting the CLUB nets).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from fmjax.runtime import errors

Term = Callable[[dict, dict], Any]


def check(weights: Mapping[str, float], terms: Mapping[str, Term], job: str) -> None:
  unknown = sorted(set(weights) - set(terms))
  if unknown:
    raise errors.ConfigError(f"{job}: config.loss names unknown term(s) {unknown}; the terms are {sorted(terms)}")


def active(weights: Mapping[str, float]) -> list[str]:
  return [name for name, weight in weights.items() if weight != 0]


def weighted_sum(terms: Mapping[str, Term], weights: Mapping[str, float], outputs: dict,
                 batch: dict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(sum of weight * term over the active terms in `terms` order, metrics: each term, its extras, `loss`)."""
  total, metrics = jnp.zeros((), jnp.float32), {}
  for name, term in terms.items():
    weight = weights.get(name, 0)
    if weight == 0:
      continue
    value = term(outputs, batch)
    if isinstance(value, tuple):
      value, extra = value
      metrics.update(extra)
    metrics[name] = value
    total = total + weight * value
  metrics["loss"] = total
  return total, metrics
