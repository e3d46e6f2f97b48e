"""CLUB's mutual-information bound and Cross-CPC on toy data with known dependence."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmjax.models import club, cpc


def _data(rng, dependent, n=512):
  kx, ky, kn = jax.random.split(rng, 3)
  x = jax.random.normal(kx, (n, 4))
  y = x[:, :3] * 2.0 + 0.1 * jax.random.normal(kn, (n, 3)) if dependent else jax.random.normal(ky, (n, 3))
  return x, y


def _fit(x, y, steps=300):
  net = club.Variational(y_dim=y.shape[-1], hidden=32)
  params = net.init(jax.random.key(0), x)["params"]
  tx = optax.adam(1e-2)
  params, _, nll = jax.jit(lambda p, s: club.fit(net, p, s, tx, x, y, steps))(params, tx.init(params))
  return net, params, float(nll)


def test_club_bound_is_zero_for_independent_and_positive_for_dependent_inputs():
  bounds = {}
  for dependent in (False, True):
    net, params, _ = _fit(*_data(jax.random.key(1), dependent))
    held_out = _data(jax.random.key(2), dependent)  # fresh samples: no credit for memorising the fit set
    bounds[dependent] = float(np.mean([club.upper_bound(net, params, *held_out, jax.random.key(k))
                                       for k in range(5)]))
  assert abs(bounds[False]) < 0.15, bounds
  assert bounds[True] > 5.0, bounds  # y is nearly a function of x: the information is large


def test_club_fit_lowers_the_negative_log_likelihood():
  x, y = _data(jax.random.key(3), dependent=True)
  assert _fit(x, y, steps=200)[2] < _fit(x, y, steps=2)[2] - 1.0


def _toy_pair(rng, batch=32, steps=6, dim=8):
  """Video features are white noise; current at t+1 is a fixed rotation of video at t plus noise."""
  kv, kn = jax.random.split(rng)
  video = jax.random.normal(kv, (batch, steps, dim))
  rotation = jnp.linalg.qr(jax.random.normal(jax.random.key(99), (dim, dim)))[0]
  current = jnp.concatenate([jnp.zeros((batch, 1, dim)), video[:, :-1] @ rotation], 1)
  return video, current + 0.1 * jax.random.normal(kn, current.shape)


def test_cross_cpc_accuracy_rises_above_chance_on_correlated_sequences():
  model = cpc.CrossCPC(context_dim=32)
  video, current = _toy_pair(jax.random.key(3))
  params = model.init(jax.random.key(0), video, current)["params"]
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, video, current):
    (loss, acc), grads = jax.value_and_grad(lambda p: model.apply({"params": p}, video, current), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = tx.init(params)
  first = None
  for i in range(150):
    params, opt_state, loss = step(params, opt_state, *_toy_pair(jax.random.key(100 + i)))
    first = float(loss) if first is None else first
  loss, acc = model.apply({"params": params}, *_toy_pair(jax.random.key(7)))  # fresh sequences
  chance = 1 / 32
  assert float(loss) < first
  assert float(acc["cpc_acc_v2c"]) > 10 * chance, acc  # video now tells current next
  assert float(acc["cpc_acc_c2v"]) < 3 * chance, acc   # but current now does not tell video next


def test_info_nce_by_hand():
  prediction = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # (B=2, T=1, D=2)
  target = jnp.array([[[2.0, 0.0]], [[0.0, 2.0]]])
  loss, acc = cpc.info_nce(prediction, target)
  np.testing.assert_allclose(loss, np.log(1 + np.exp(-2.0)), rtol=1e-6)  # logits [2, 0] for the positive first
  assert float(acc) == 1.0
