"""Jobs, evaluators and models found by name: `find(name, 'Task' | 'Evaluator' | 'Model')`.

A bare name is a module of fmjax's own package for that kind (`fmjax.train.tasks`, `fmjax.evals`,
`fmjax.models`); a dotted name is a module path of its own, so a job, evaluator or model outside fmjax
needs no edit to fmjax.
"""

from __future__ import annotations

import importlib
from typing import Any

from fmjax.runtime import errors

PACKAGES = {"Task": "fmjax.train.tasks", "Evaluator": "fmjax.evals", "Model": "fmjax.models"}


def find(name: str, attribute: str) -> Any:
  """`attribute` ('Task', 'Evaluator' or 'Model') of module `name`: `fmjax.<kind package>.<name>`
  for a bare name, else the module path `name` itself."""
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
