"""fmjax: cross-modal learning on fused magnesium furnace smelting (video + three-phase current) in JAX/Flax.

Importing any fmjax module first applies the version workarounds that the installed versions need
(`fmjax.runtime.compat.apply`): one sets XLA_FLAGS for several forced CPU devices, which XLA reads when JAX's
backend starts, so import fmjax before the first JAX computation.
"""

from fmjax.runtime import compat as _compat

_compat.apply()
