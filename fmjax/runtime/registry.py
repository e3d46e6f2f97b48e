"""Jobs, evaluators and models found by name: `find(name, 'Task' | 'Evaluator' | 'Model')`.

A bare name is a module of fmjax's own package for that kind (`fmjax.train.tasks`, `fmjax.evals`,
`fmjax.models`); a dotted name is a module path of its own, so a job, evaluator or model outside fmjax
needs no edit to fmjax.

A name read from a run folder (another run's saved `config.json`) is data, not code: importing a module runs
it, so such a name must be one of fmjax's own modules of its kind (`OWN`; `find(..., saved_in=...)`, or
`check_saved` where the name is found later). A module path is taken only from the command line or a config
file the user runs.
"""

from __future__ import annotations

import importlib
from typing import Any

from fmjax.runtime import errors

PACKAGES = {"Task": "fmjax.train.tasks", "Evaluator": "fmjax.evals", "Model": "fmjax.models"}
# fmjax's own modules of each kind: the only names a saved config.json may give (tests/test_layout.py checks
# that they are exactly the modules of PACKAGES[kind] that have the attribute).
OWN = {"Task": ("align", "fmformer", "pretrain", "transfer"),
       "Evaluator": ("classification", "codebook", "lead_time", "probes", "warning"),
       "Model": ("align", "fmformer", "hdcid", "unicode")}


def find(name: str, attribute: str, *, saved_in: str = "", key: str = "") -> Any:
  """`attribute` ('Task', 'Evaluator' or 'Model') of module `name`: `fmjax.<kind package>.<name>`
  for a bare name, else the module path `name` itself. With `saved_in`, `name` was read from `key` of that
  saved config.json, and must be one of fmjax's own (`check_saved`) before anything is imported."""
  if saved_in:
    check_saved(name, attribute, saved_in, key)
  module_name = name if "." in name else f"{PACKAGES[attribute]}.{name}"
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as error:
    if error.name is None or not module_name.startswith(error.name):
      raise  # a module that exists but imports something missing: a real error
    raise errors.ConfigError(f"{name!r}: no module {module_name} to take a {attribute} from") from None
  if not hasattr(module, attribute):
    raise errors.ConfigError(f"{module_name} has no {attribute}: it is not a {attribute.lower()} module")
  return getattr(module, attribute)


def check_saved(name: Any, attribute: str, saved_in: str, key: str) -> str:
  """`name`, read from `key` of the saved config.json `saved_in`, when it is one of fmjax's own modules of
  `attribute`'s kind (`OWN`); a ConfigError naming the file, key and value otherwise (nothing is imported)."""
  if name not in OWN[attribute]:
    raise errors.ConfigError(
        f"{saved_in}: {key}={name!r} is not one of fmjax's own {attribute.lower()} modules "
        f"({', '.join(OWN[attribute])}); a run folder's config may name only those (a module path is taken only "
        f"from the command line or a config file you run)")
  return name
