"""H-DCID: Uni-Code's DCID (level 1) with a second level built on the level-1 specific features.

Following the official code (haihuangcode/TOC_H-DCID, paths under `code/src/`): level 2 takes each modality's
level-1 *specific* features as its input (`model/main_model_2.py:1439-1453`) and splits them again into
semantic and specific parts, with its own semantic encoders (Linear + temporal Transformer,
main_model_2.py:1355-1357, 20-34), specific encoders (Linear + ReLU, main_model_2.py:183-192, 1344-1346),
decoders that rebuild the level-1 specific features (main_model_2.py:1508-1513), a separate codebook of its own
size (`Cross_MLVQEmbeddingEMA_AVT` keeps one per level, main_model_2.py:1530-1545; 400 codes each downstream,
`ave_mlvq.py:88`), the same MM-EMA, dead-code reset and commitment rule as level 1 (main_model_2.py:1519,
1654-1726), and a second Cross-CPC on the level-2 semantic features (`pretrain_ml.py:295-297, 704-710`).
There is no `.detach()` between the levels (main_model_2.py:1439-1453, 1511-1513): every level-2 loss, the
reconstruction target included, back-propagates into the level-1 specific encoders, and into nothing else of
level 1.

Level 1 is `unicode.UniCode` unchanged (every variable path the same: `params/semantic_*`,
`vq_ema/codebook`, ...); level 2 lives under `semantic2_*`, `specific2_*`, `decoders2_*`, `cpc2` and
`vq_ema/codebook2`. Where fmjax differs from the official code, and why:
- the level-2 decoder is `encoders.StepDecoder` (one hidden layer), not the official linear `Simple_Decoder`
  (main_model_2.py:254-267), and the level-2 specific width is `specific_dim` (official: d -> d): reuse of
  fmjax's level-1 pieces, whose specific features are already `specific_dim` wide;
- MM-EMA over two modalities (0.5/0.5) and fmjax's dead-code reset at both levels (official: three
  modalities, main_model_2.py:1654-1708), as at level 1;
- level 1 keeps fmjax's DCID, cross-modal code matching included (the task's `loss.code_matching`), as the
  issue asks ("level 1 is DCID unchanged"); the official H-DCID has none at either level
  (main_model_2.py:1602-1603): `--config.loss.code_matching=0` gives that.
The warm-up, the level-2 loss weight and the level-2 CLUB nets are the training task's
(`fmjax.train.tasks.pretrain`).
"""

from __future__ import annotations

from typing import Any

import jax

from fmjax.models import cpc, encoders, layers, unicode, vq

MODALITIES = unicode.MODALITIES


class HDCID(unicode.UniCode):
  """`__call__(video=, current=, update=)` -> UniCode's dict plus `level2`: the same keys (quantized_m, codes_m,
  distances_m, commitment, cpc, cpc_acc_*, semantic_m, specific_m, recon_m, code_use) for level 2."""
  num_codes2: int = 400  # level 2's own codebook (the official downstream scripts build 400 per level)

  def setup(self):
    super().setup()
    dtype = layers.compute_dtype(self.dtype)
    # Level 2's Φ²_m (Linear + Transformer, the official `InternalTemporalRelationModule`, main_model_2.py:20-34)
    # and ψ²_m (Linear + ReLU, `Simple_Encoder`, main_model_2.py:183-192) read per-step feature vectors.
    self.semantic2 = {m: encoders.SemanticEncoder("features", self.dim, self.depth, self.heads, dtype=dtype,
                                                  attention=self.attention) for m in MODALITIES}
    self.specific2 = {m: encoders.SpecificEncoder("features", self.specific_dim, dtype=dtype) for m in MODALITIES}
    self.decoders2 = {m: encoders.StepDecoder(self.specific_dim, dtype=dtype) for m in MODALITIES}
    self.codebook2 = vq.SharedCodebook(self.num_codes2, self.dim, self.decay, self.epsilon, self.ema_cross_weight,
                                       self.commitment_cost, self.reset_after, init_scale=self.init_scale,
                                       axis_name=self.axis_name)
    self.cpc2 = cpc.CrossCPC(self.cpc_context, self.cpc_steps, same_weight=self.cpc_same_weight,
                             axis_name=self.axis_name, dtype=dtype)

  def __call__(self, video: jax.Array | None = None, current: jax.Array | None = None,
               update: bool = False) -> dict[str, Any]:
    out = super().__call__(video=video, current=current, update=update)
    out["level2"] = self.level2(out["specific_video"], out["specific_current"], update=update)
    return out

  def level2(self, specific_video: jax.Array, specific_current: jax.Array, update: bool = False) -> dict[str, Any]:
    """Level 2's outputs from the level-1 specific features (B, L, specific_dim), live (no stop_gradient, as
    main_model_2.py:1439-1453); `recon_m` rebuilds them (the target not detached either, main_model_2.py:1511-1513)."""
    return self.level({"video": specific_video, "current": specific_current},
                      (self.semantic2, self.specific2, self.decoders2), self.codebook2, self.cpc2,
                      lambda modality, features: features, update)

  def encode(self, modality: str, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(codes, quantized, codes2, quantized2) of one modality's sequences at both levels (as the official
    `*_VQ_Encoder`s, main_model_2.py:1359-1393), the codebooks left as they are."""
    codes, quantized = super().encode(modality, x)
    codes2, quantized2 = self.codebook2.lookup(self.semantic2[modality](self.specific[modality](x)))
    return codes, quantized, codes2, quantized2


Model = HDCID
