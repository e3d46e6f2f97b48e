"""Statistics of a codebook's codes: do the video and current codes of aligned steps go together?

Both tests ask it of sequences of codes (N, L), one per modality, step i of a video sequence aligned
with step i of its current sequence, as the shared codebook (`fmjax.models.vq`) assigns them. Each
compares a statistic of the aligned pairs with its value under re-pairing (`repairing_test`): every
video sequence paired with another sequence's current, which keeps each modality's code frequencies and
runs but breaks the alignment.

* `agreement_test`: the share of aligned steps on the same code.
* `mutual_information_test`: the plug-in mutual information (`mutual_information_bits`) of the aligned
  codes, which also counts codes that go together without being equal.

The codebook's perplexity stays in `fmjax.models.vq`: the pretraining step logs it every step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def repairing_test(statistic, codes_video: jax.Array, codes_current: jax.Array, rng: jax.Array,
                   permutations: int, batch_size: int) -> dict[str, jax.Array]:
  """A permutation test of `statistic(codes_video, codes_current)` for aligned sequences (N, L).

  The null pairs each video sequence with another sequence's current (a random permutation of the N
  sequences, steps kept together): it keeps both modalities' code frequencies and the runs of one
  code within a sequence, which a per-step test would ignore. Returns the `observed` value, the null's
  `null_mean` and `null_std`, `z` = (observed - null_mean) / null_std and `p` = (1 + #null >= observed)
  / (1 + permutations); `batch_size` permutations are evaluated at once.
  """
  observed = statistic(codes_video, codes_current)
  keys = jax.random.split(rng, permutations)
  null = jax.lax.map(lambda key: statistic(codes_video[jax.random.permutation(key, codes_video.shape[0])],
                                           codes_current), keys, batch_size=min(permutations, batch_size))
  mean, std = null.mean(), null.std()
  return {"observed": observed, "null_mean": mean, "null_std": std,
          "z": (observed - mean) / jnp.maximum(std, 1e-12), "p": (1 + jnp.sum(null >= observed)) / (1 + permutations)}


@functools.partial(jax.jit, static_argnames="permutations")
def agreement_test(codes_video: jax.Array, codes_current: jax.Array, rng: jax.Array,
                   permutations: int = 1000) -> dict[str, jax.Array]:
  """Is the cross-modal code agreement of aligned sequences (N, L) above chance? `repairing_test` of
  the share of equal codes: `agreement`, `null_mean` (≈ the chance agreement from the code
  frequencies), `null_std`, `z` and `p`."""
  test = repairing_test(lambda v, c: jnp.mean(v == c), codes_video, codes_current, rng, permutations, 32)
  return {"agreement": test.pop("observed"), **test}


def mutual_information_bits(a: jax.Array, b: jax.Array, num_a: int, num_b: int) -> jax.Array:
  """Plug-in mutual information (bits) between two aligned integer sequences of symbols in [0, num_a)
  and [0, num_b), from their joint histogram."""
  joint = jnp.bincount(a.ravel() * num_b + b.ravel(), length=num_a * num_b).reshape(num_a, num_b)
  p = joint / jnp.maximum(joint.sum(), 1)
  outer = p.sum(1, keepdims=True) * p.sum(0, keepdims=True)
  terms = jnp.where(p > 0, p * (jnp.log2(jnp.where(p > 0, p, 1.0)) - jnp.log2(jnp.where(p > 0, outer, 1.0))), 0.0)
  return terms.sum()


def mutual_information_test(codes_video: jax.Array, codes_current: jax.Array, rng: jax.Array, num_codes: int,
                            permutations: int = 1000) -> dict[str, jax.Array]:
  """Do the video and current codes of aligned steps share information? `repairing_test` of their
  mutual information: `bits`, `null_mean`, `null_std`, `z`, `p`. The plug-in estimate is biased
  upwards with many codes and few steps; the null carries the same bias, so `z` and `p` compare like
  with like."""
  mi = functools.partial(mutual_information_bits, num_a=num_codes, num_b=num_codes)
  test = repairing_test(mi, codes_video, codes_current, rng, permutations, 8)
  return {"bits": test.pop("observed"), **test}
