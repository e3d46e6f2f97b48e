"""A job's `config.data`: its keys and defaults, and how a job that reads another run inherits it.

`default(**synthetic_overrides)` is `config.data` (`configs/common.py` says what each key means): with
`root` empty the synthetic furnace of `synthetic` (the fields of `fmjax.data.synthetic.SyntheticConfig`),
generated and prepared under `data_dir` on first use; with `root` set, that FMF root.

`inherit(given, source)` is the data of a job that evaluates another run (the transfer job, on a pretrain
run): each key the job leaves at its default takes the run's value, so `configs/transfer.py
--config.init_from=RUN` evaluates RUN on the data it was trained on (a real root, another synthetic
furnace), and a key set on the command line (`--config.data.root=...`) is this job's.
"""

from __future__ import annotations

import dataclasses

from ml_collections import ConfigDict

from fmjax.data import synthetic


def default(**synthetic_overrides) -> ConfigDict:
  knobs = dataclasses.asdict(dataclasses.replace(synthetic.SyntheticConfig(), **synthetic_overrides))
  return ConfigDict({
      "root": "",       # an FMF-layout folder (real benchmark or synthetic); empty: the synthetic default
      "data_dir": "",   # cache for generated and prepared data; empty: $FMJAX_DATA_DIR or ~/.cache/fmjax/tfds
      "fingerprint": "stat",  # what names the prepared copy: 'stat' (files' sizes and times) or 'content' (bytes)
      "synthetic": knobs,
  })


def inherit(given: ConfigDict, source: ConfigDict) -> tuple[ConfigDict, dict[str, object]]:
  """(`given` with every key left at `default()`'s value replaced by `source`'s where `source` has it and
  differs, {dotted name: value} of the keys taken from `source`). Values are taken as they are (an int
  stays an int: the synthetic furnace's folder is named by its knobs' JSON)."""
  data, taken = given.to_dict(), {}

  def merge(into: dict, defaults: dict, theirs: dict, prefix: str) -> None:
    for key, value in defaults.items():
      if key not in theirs or key not in into:
        continue
      if isinstance(value, dict):
        merge(into[key], value, theirs[key], f"{prefix}{key}.")
      elif into[key] == value and theirs[key] != value:
        into[key] = taken[prefix + key] = theirs[key]

  merge(data, default().to_dict(), source.to_dict(), "")
  return ConfigDict(data), taken
