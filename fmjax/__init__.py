"""fmjax: cross-modal learning on fused magnesium furnace smelting (video + three-phase current) in JAX/Flax.

The package's layers, bottom to top; each imports only from those before it (tests/test_layout.py):

  runtime      errors, paths, console, compat (every version workaround), processes, devices, lookup by name
  data         the FMF format, the synthetic furnace, TFDS preparation, the grain pipeline
  losses       global-batch contrastive losses
  models       pure flax.linen models (FmFormer, Uni-Code, the aligner)
  analysis     numerics on what models give: metrics, linear heads, the lag search, codebook statistics
  convert      official weights, converted models on disk
  checkpoints  the train state, saving it, reading a finished run (`checkpoints.runs.read`)
  evals        evaluators, built from a job's pure predict functions, its data and its sample geometry
  train        the one trainer (`train.loop.train_and_evaluate`) and the jobs (`train.tasks`)

Importing any fmjax module first applies the version workarounds that the installed versions need
(`fmjax.runtime.compat.apply`): one sets XLA_FLAGS for several forced CPU devices, which XLA reads when JAX's
backend starts, so import fmjax before the first JAX computation.
"""

from fmjax.runtime import compat as _compat

_compat.apply()
