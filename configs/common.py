"""Config pieces shared by every job: where the data comes from.

Jobs embed `data_config()` as `config.data`. With `root` empty the job uses the synthetic furnace
described by `config.data.synthetic` (the fields of `fmjax.data.synthetic.SyntheticConfig`),
generated and prepared under `data_dir` on first use; with `root` set it uses that FMF root.
"""

import dataclasses

import ml_collections

from fmjax import errors
from fmjax.data import synthetic


def data_config(**synthetic_overrides) -> ml_collections.ConfigDict:
  knobs = dataclasses.asdict(dataclasses.replace(synthetic.SyntheticConfig(), **synthetic_overrides))
  return ml_collections.ConfigDict({
      "root": "",       # an FMF-layout folder (real benchmark or synthetic); empty: the synthetic default
      "data_dir": "",   # cache for generated and prepared data; empty: $FMJAX_DATA_DIR or ~/.cache/fmjax/tfds
      "synthetic": knobs,
  })


def variants(arg: str | None, allowed: tuple[str, ...], job: str) -> list[str]:
  """The comma-separated variants of `--config=configs/<job>.py:<arg>`; an unknown one is an error."""
  chosen = [v for v in (arg or "").split(",") if v]
  unknown = sorted(set(chosen) - set(allowed))
  if unknown:
    raise errors.ConfigError(f"unknown {job} variant(s) {unknown}; choose from {allowed}")
  return chosen


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`tiny` shrinks the synthetic furnace for tests and smoke runs."""
  if arg == "tiny":
    return data_config(recordings=2, duration_s=900, fps=1.0, image_size=32, spot_radius_min=4, spot_radius_max=7)
  return data_config()
