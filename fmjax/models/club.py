"""CLUB: a sampled upper bound on the mutual information between two features (Cheng et al., 2020).

Uni-Code keeps a modality's quantized semantic features x and its specific features y apart by
minimising this bound. A variational net q(y|x) = N(mu(x), exp(logvar(x))) is fitted by maximum
likelihood on stop-gradient inputs in its own optimiser steps (`fit`); the main loss then adds
`upper_bound` = mean_i[log q(y_i|x_i) - log q(y_perm(i)|x_i)], which is ~0 when x and y are independent.

Under data parallelism pass `axis_name`: the permutation runs over the global batch (gathered from
every device) and the fitting gradients are averaged, so any device count gives the same numbers.
The nets and the bound are float32: features of a bfloat16 model are cast to float32 first.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from fmjax.losses.collectives import gather_batch, local_offset


class Variational(nn.Module):
  """q(y|x): (mu, logvar) of a diagonal Gaussian, each from its own two-layer MLP; logvar ends in tanh."""
  y_dim: int
  hidden: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    mu = nn.Dense(self.y_dim, name="mu_out")(nn.relu(nn.Dense(self.hidden, name="mu_hidden")(x)))
    logvar = nn.Dense(self.y_dim, name="logvar_out")(nn.relu(nn.Dense(self.hidden, name="logvar_hidden")(x)))
    return mu, jnp.tanh(logvar)


def log_likelihood(mu: jax.Array, logvar: jax.Array, y: jax.Array) -> jax.Array:
  """log q(y|x) per sample up to a constant (summed over feature dimensions)."""
  return jnp.sum(-0.5 * (y - mu) ** 2 / jnp.exp(logvar) - 0.5 * logvar, -1)


def upper_bound(net: Variational, params, x: jax.Array, y: jax.Array, rng: jax.Array,
                axis_name: str | None = None) -> jax.Array:
  """This device's mean of log q(y_i|x_i) - log q(y_perm(i)|x_i); x, y: (N, d) with N the local batch."""
  x, y = x.astype(jnp.float32), y.astype(jnp.float32)
  mu, logvar = net.apply({"params": params}, x)
  y_all = gather_batch(y, axis_name)
  perm = jax.random.permutation(rng, y_all.shape[0])  # the same key, hence permutation, on every device
  y_neg = y_all[jax.lax.dynamic_slice_in_dim(perm, local_offset(x.shape[0], axis_name), x.shape[0])]
  return jnp.mean(log_likelihood(mu, logvar, y) - log_likelihood(mu, logvar, y_neg))


def nll(net: Variational, params, x: jax.Array, y: jax.Array) -> jax.Array:
  """The fitting loss: -mean log q(y|x) over this device's (N, d) samples."""
  mu, logvar = net.apply({"params": params}, x)
  return -jnp.mean(log_likelihood(mu, logvar, y))


def fit(net: Variational, params, opt_state, tx: optax.GradientTransformation, x: jax.Array, y: jax.Array,
        steps: int, axis_name: str | None = None):
  """`steps` maximum-likelihood steps of q(y|x) on stop-gradient x, y; returns (params, opt_state, nll)."""
  x, y = jax.lax.stop_gradient(x.astype(jnp.float32)), jax.lax.stop_gradient(y.astype(jnp.float32))

  def step(carry, _):
    p, s = carry
    value, grads = jax.value_and_grad(nll, argnums=1)(net, p, x, y)
    if axis_name is not None:
      value, grads = jax.lax.pmean((value, grads), axis_name)
    updates, s = tx.update(grads, s, p)
    return (optax.apply_updates(p, updates), s), value

  (params, opt_state), values = jax.lax.scan(step, (params, opt_state), None, length=steps)
  return params, opt_state, values[-1]
