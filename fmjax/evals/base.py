"""What an evaluator is given and what it gives back (big_vision style).

A job offers a small dict of named pure functions (`Task.predict_fns()`: e.g. FmFormer's `logits`,
Uni-Code's `encode`, the aligner's `embed`). An evaluator names the ones it uses (`predict_fns`, a
class attribute) and is built as `Evaluator(context, **settings)` from one entry of `config.evals`:
`context` carries those functions, the prepared data and the geometry of the job's samples, so the
evaluator builds its own input and needs nothing else from the job. `run(par, variables, shared)`
evaluates the trained variables (in the device layout of `par`) and returns an `Evaluation`. Work that
several evaluators need (reading a split, encoding it) goes through `shared`, which the trainer makes
anew for each evaluation: the first evaluator that asks for a result under a key computes it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import ml_collections

from fmjax.runtime import errors, registry


class Evaluation(NamedTuple):
  """What an evaluator gives: summary entries (scalars go to summary.json and the writers) and a
  function that adds its sections to report.md (or None)."""
  summary: dict[str, Any]
  report: Callable[[Any], None] | None = None


class Context(NamedTuple):
  """What an evaluator gets from a job.

  `predict_fns`: the job's pure functions by name (`Task.predict_fns()`); `data`: the prepared data
  (`fmjax.data.tfds_fmf.PreparedFmf`, or None for a job without); `inputs`: how the job cuts its
  samples from the data (`Task.inputs`: `kind` 'clip' or 'sequence' and `spec`, the geometry
  `fmjax.data.pipeline.sample_fn` takes, plus job-specific geometry such as the aligner's `max_lag`);
  `seed`: the run's seed.
  """
  predict_fns: Mapping[str, Callable]
  data: Any
  inputs: Mapping[str, Any]
  seed: int


class Shared:
  """Results several evaluators of one evaluation need, each computed once under an explicit key
  (e.g. ('codes', 'trained', 'test', stride, limit, batch))."""

  def __init__(self):
    self._results: dict[tuple, Any] = {}

  def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
    if key not in self._results:
      self._results[key] = compute()
    return self._results[key]


@runtime_checkable
class Evaluator(Protocol):
  """Built as `Evaluator(context, **settings)`; `predict_fns` names the job's functions it uses."""
  predict_fns: tuple[str, ...]

  def run(self, par: Any, variables: Any, shared: Shared) -> Evaluation: ...


def build(name: str, settings: ml_collections.ConfigDict, context: Context) -> Evaluator:
  """`Evaluator(context, **settings)` of the module `settings.type` names. A setting it does not take,
  or a predict function the job does not offer, is a ConfigError naming it."""
  if "type" not in settings:
    raise errors.ConfigError(f"evals.{name} has no 'type' (the evaluator module, e.g. 'classification')")
  cls = registry.find(settings.type, "Evaluator")
  missing = sorted(set(getattr(cls, "predict_fns", ())) - set(context.predict_fns))
  if missing:
    raise errors.ConfigError(f"evals.{name}: the {settings.type!r} evaluator needs the predict function(s) "
                             f"{missing}, which this job does not offer (it offers {sorted(context.predict_fns)})")
  kwargs = {k: v for k, v in settings.items() if k != "type"}
  parameters = dict(list(inspect.signature(cls).parameters.items())[1:])  # after `context`
  if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
      raise errors.ConfigError(f"evals.{name}: the {settings.type!r} evaluator takes no setting(s) {unknown};"
                               f" it takes {sorted(parameters)}")
  missing = sorted(k for k, p in parameters.items() if p.default is p.empty and k not in kwargs
                   and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
  if missing:
    raise errors.ConfigError(f"evals.{name}: the {settings.type!r} evaluator needs the setting(s) {missing}"
                             f" (configs/common.py EVALUATIONS has every fmjax evaluator's)")
  return cls(context, **kwargs)
