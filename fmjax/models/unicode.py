"""Uni-Code: video and current mapped onto one shared discrete codebook.

Per modality m: a semantic encoder Φ_m (per-step extractor + temporal Transformer) gives z_m (B, L, D),
quantized with the shared codebook (`vq.SharedCodebook`, state in the `vq_ema` collection); a
modality-specific encoder ψ_m gives s_m; a decoder rebuilds each step's input from
concat(quantized_m, s_m); Cross-CPC predicts each modality's future from the other's past. The CLUB
variational nets are not part of this module: they have their own optimiser (`fmjax.models.club`)
and are the training task's aux state. Loss weights are applied by the task, so any term can be switched off.

`dtype` (e.g. 'bfloat16' on accelerators) is the compute dtype of the encoders', decoders' and
Cross-CPC's Dense/Conv/LSTM matmuls; parameters stay float32, and so do the features leaving each
encoder, the codebook (distances, code assignment, its `vq_ema` state and EMA statistics), the
Cross-CPC InfoNCE logits, the reconstruction errors and every loss output.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fmjax.models import cpc, encoders, layers, vq
from fmjax.runtime import errors

MODALITIES = cpc.MODALITIES


class UniCode(layers.NamedComputeDtype):
  """`__call__(video=, current=, update=)` -> a dict of features, codes and per-term losses (unweighted)."""
  # encoders: semantic width, specific width, temporal Transformer depth and heads
  dim: int = 256
  specific_dim: int = 64
  depth: int = 2
  heads: int = 4
  # the shared codebook (vq.SharedCodebook)
  num_codes: int = 400
  decay: float = 0.99
  epsilon: float = 1e-5
  ema_cross_weight: float = 0.5      # MM-EMA; 0 for plain EMA
  commitment_cost: float = 0.25
  reset_after: int = 300
  init_scale: float | None = None
  # Cross-CPC (cpc.CrossCPC)
  cpc_context: int = 256
  cpc_steps: tuple[int, ...] = (1,)
  cpc_same_weight: float = 0.1
  video_size: int = 0                 # flattened per-step input sizes the decoders rebuild
  current_size: int = 0
  axis_name: str | None = None
  dtype: Any = jnp.float32            # compute dtype of the matmuls (a dtype or its name, e.g. 'bfloat16')
  attention: str = "auto"             # the attention kernel: fmjax.models.attention.IMPLEMENTATIONS

  def setup(self):
    dtype = layers.compute_dtype(self.dtype)
    self.semantic = {m: encoders.SemanticEncoder(m, self.dim, self.depth, self.heads, dtype=dtype,
                                                attention=self.attention) for m in MODALITIES}
    self.specific = {m: encoders.SpecificEncoder(m, self.specific_dim, dtype=dtype) for m in MODALITIES}
    self.decoders = {"video": encoders.StepDecoder(self.video_size, dtype=dtype),
                     "current": encoders.StepDecoder(self.current_size, dtype=dtype)}
    self.codebook = vq.SharedCodebook(self.num_codes, self.dim, self.decay, self.epsilon, self.ema_cross_weight,
                                      self.commitment_cost, self.reset_after, init_scale=self.init_scale,
                                      axis_name=self.axis_name)
    self.cpc = cpc.CrossCPC(self.cpc_context, self.cpc_steps, same_weight=self.cpc_same_weight,
                            axis_name=self.axis_name, dtype=dtype)

  def __call__(self, video: jax.Array | None = None, current: jax.Array | None = None,
               update: bool = False) -> dict[str, Any]:
    """Every output for both modalities' sequences; `recon_<m>` is per sequence (B,). Under `jit`
    only the outputs that are used are computed (evaluation skips Cross-CPC that way)."""
    if video is None or current is None:
      raise errors.ConfigError("UniCode needs both video= and current= sequences; got "
                               f"{'neither' if video is None and current is None else 'only one'}")
    return self.level({"video": video, "current": current}, (self.semantic, self.specific, self.decoders),
                      self.codebook, self.cpc, encoders.reconstruction_target, update)

  def level(self, inputs: dict, encoders_: tuple[dict, dict, dict], codebook: vq.SharedCodebook,
            cross_cpc: cpc.CrossCPC, target, update: bool) -> dict[str, Any]:
    """One DCID level on `inputs` ({modality: (B, L, ...)}): its (semantic, specific, decoder) modules per
    modality, codebook and Cross-CPC; each decoder rebuilds `target(modality, input)`. H-DCID's level 2 runs it
    again on level 1's specific features (`fmjax.models.hdcid`)."""
    semantic, specific, decoders = encoders_
    z = {m: semantic[m](inputs[m]) for m in MODALITIES}
    out = codebook(z["video"], z["current"], update=update)
    out["cpc"], cpc_accuracy = cross_cpc(z["video"], z["current"])
    out.update(cpc_accuracy)
    for m in MODALITIES:
      s = specific[m](inputs[m])
      out[f"semantic_{m}"], out[f"specific_{m}"] = z[m], s
      rebuilt = decoders[m](jnp.concatenate([out[f"quantized_{m}"], s], -1))
      out[f"recon_{m}"] = jnp.mean((rebuilt - target(m, inputs[m])) ** 2, axis=(1, 2))
    return out

  def encode(self, modality: str, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(codes (B, L), quantized (B, L, D)) of one modality's sequences, the codebook left as it is."""
    return self.codebook.lookup(self.semantic[modality](x))


Model = UniCode
