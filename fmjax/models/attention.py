"""Softmax attention, with the kernel chosen per platform when the program is lowered.

`dot_product_attention(..., implementation)`: 'cpu_chunked' is the CPU kernel below; 'xla' is
`jax.nn.dot_product_attention` (with implementation=None that is XLA's attention in the jax versions
fmjax supports; XLA fuses it for the device); 'auto' (the default) lowers to the CPU kernel on CPU and
to 'xla' on every other platform (`jax.lax.platform_dependent`), so one traced program, exported or
compiled for a TPU or a GPU, carries the accelerator's path. A serial loop of small per-chunk matmuls,
right for a CPU's cache, would leave a TPU's matrix units idle. Within one jitted program (every fmjax
step) only the platform's branch remains; a backward pass compiled apart from its forward would carry
the other branch's residuals as zeros.

The CPU kernel computes attention in cache-sized batch chunks, with a recomputing backward pass.

Plain attention materialises (B, heads, N, M) scores: 62 MB per layer at the official batch of
32 with 401 video tokens. On a CPU such buffers exceed the allocator's reuse threshold (glibc
maps and faults them in afresh each call) and the cache, so the step becomes memory-bound; the
saved softmax for the backward pass doubles that. Here `lax.map` walks the batch in chunks whose
scores fit in a few MB, and the backward pass recomputes each chunk's probabilities from q, k and
the saved log-sum-exp (as flash attention does), so no full-size score tensor ever exists. Inside a
chunk the heads come first, (b, heads, N, d), and each product's output is normalised after the PV
product: XLA's CPU backend runs the chunk products faster that way than in the callers'
(b, N, heads, d) layout (bench/RESULTS.md). The result equals
`jax.nn.dot_product_attention` up to float rounding.
"""

import functools

import jax
import jax.numpy as jnp

from fmjax.runtime import errors

CHUNK_BYTES = 4 << 20
IMPLEMENTATIONS = ("auto", "cpu_chunked", "xla")


def chunk_size(batch: int, heads: int, queries: int, keys: int, itemsize: int = 4) -> int:
  """Largest divisor of `batch` whose score block stays within CHUNK_BYTES (at least 1)."""
  per_example = heads * queries * keys * itemsize
  best = 1
  for c in range(1, batch + 1):
    if batch % c == 0 and c * per_example <= CHUNK_BYTES:
      best = c
  return best


def _chunks(x: jax.Array, c: int) -> jax.Array:
  return x.reshape((x.shape[0] // c, c) + x.shape[1:])


def _heads_first(x: jax.Array) -> jax.Array:
  """(b, N, heads, d) <-> (b, heads, N, d)."""
  return jnp.swapaxes(x, 1, 2)


def _scores(q, k, scale):
  return jnp.einsum("bhnd,bhmd->bhnm", q, k, preferred_element_type=jnp.float32) * scale


def _forward_chunk(q, k, v, scale):
  q, k, v = map(_heads_first, (q, k, v))
  s = _scores(q, k, scale)
  m = jax.lax.stop_gradient(s.max(-1, keepdims=True))
  p = jnp.exp(s - m)
  total = p.sum(-1, keepdims=True)
  out = jnp.einsum("bhnm,bhmd->bhnd", p.astype(v.dtype), v) / total
  return _heads_first(out.astype(v.dtype)), (m + jnp.log(total))[..., 0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _attention(q, k, v, chunk):
  return _attention_fwd(q, k, v, chunk)[0]


def _attention_fwd(q, k, v, chunk):
  scale = q.shape[-1] ** -0.5
  out, lse = jax.lax.map(lambda t: _forward_chunk(*t, scale), (_chunks(q, chunk), _chunks(k, chunk), _chunks(v, chunk)))
  out = out.reshape(q.shape[:3] + (v.shape[-1],))
  return out, (q, k, v, out, lse.reshape((q.shape[0],) + lse.shape[2:]))


def _backward_chunk(q, k, v, out, lse, d_out, scale):
  q, k, v, out, d_out = map(_heads_first, (q, k, v, out, d_out))
  p = jnp.exp(_scores(q, k, scale) - lse[..., None])
  dv = jnp.einsum("bhnm,bhnd->bhmd", p.astype(d_out.dtype), d_out)
  dp = jnp.einsum("bhnd,bhmd->bhnm", d_out, v, preferred_element_type=jnp.float32)
  delta = jnp.einsum("bhnd,bhnd->bhn", d_out.astype(jnp.float32), out.astype(jnp.float32))
  ds = (p * (dp - delta[..., None]) * scale).astype(q.dtype)
  dq, dk = jnp.einsum("bhnm,bhmd->bhnd", ds, k), jnp.einsum("bhnm,bhnd->bhmd", ds, q)
  return tuple(map(_heads_first, (dq, dk, dv)))


def _attention_bwd(chunk, residuals, d_out):
  q, k, v, out, lse = residuals
  scale = q.shape[-1] ** -0.5
  parts = (q, k, v, out, lse, d_out)
  dq, dk, dv = jax.lax.map(lambda t: _backward_chunk(*t, scale), tuple(_chunks(x, chunk) for x in parts))
  return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)


_attention.defvjp(_attention_fwd, _attention_bwd)


def _cpu_chunked(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  return _attention(q, k, v, chunk_size(q.shape[0], q.shape[2], q.shape[1], k.shape[1]))


def _xla(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  return jax.nn.dot_product_attention(q, k, v)  # implementation=None: XLA's


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, implementation: str = "auto") -> jax.Array:
  """softmax(q k^T / sqrt(d)) v for (B, N, heads, d) queries and (B, M, heads, d) keys/values.

  `implementation`: 'auto' (the CPU kernel on CPU, 'xla' elsewhere, chosen at lowering), 'cpu_chunked' or
  'xla' on every platform (a model's `attention` field, `--config.model.attention`).
  """
  if implementation == "cpu_chunked":
    return _cpu_chunked(q, k, v)
  if implementation == "xla":
    return _xla(q, k, v)
  if implementation != "auto":
    raise errors.ConfigError(f"model.attention={implementation!r} is not one of {IMPLEMENTATIONS}")
  return jax.lax.platform_dependent(q, k, v, cpu=_cpu_chunked, default=_xla)
