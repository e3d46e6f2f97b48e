"""The AlignVSR-style aligner variant (configs/align.py:alignvsr): its local term by hand, its
cross-attention on a hand-built shift, the lead-time search it shares with the default aligner, and a
tiny end-to-end run."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.analysis import lag_search
from fmjax.losses import local_alignment
from fmjax.models import align as align_model
from fmjax.runtime import errors
from fmjax.train import loop
from fmjax.train.tasks import align as align_task

pytestmark = pytest.mark.stack  # also run on Colab's versions (.ci/run, setup.cfg)

EPS = 1e-8


def _one_hot_attention(window: int, units: int, lead: int) -> np.ndarray:
  """(1, W, T): video step t attends to exactly the unit `lead` steps before its own."""
  attention = np.zeros((1, window, units), np.float32)
  attention[0, np.arange(window), units - window + np.arange(window) - lead] = 1.0
  return attention


def test_local_term_by_hand():
  window, units, lead, lags = 4, 12, 3, np.arange(7)
  attention = _one_hot_attention(window, units, lead)
  miss = -math.log(EPS)                                  # a step with no mass on its span
  per_lag = np.asarray(local_alignment.local_per_lag(jnp.asarray(attention), lags, radius=0))
  np.testing.assert_allclose(per_lag[0], [miss, miss, miss, 0, miss, miss, miss], atol=1e-5)
  per_lag = np.asarray(local_alignment.local_per_lag(jnp.asarray(attention), lags, radius=1))
  np.testing.assert_allclose(per_lag[0], [miss, miss, 0, 0, 0, miss, miss], atol=1e-5)
  # half the mass one step further back: at lag 3 (radius 0) every step has half its mass on the span
  split = 0.5 * attention + 0.5 * _one_hot_attention(window, units, lead + 1)
  per_lag = np.asarray(local_alignment.local_per_lag(jnp.asarray(split), lags, radius=0))
  np.testing.assert_allclose(per_lag[0, 3:5], [math.log(2), math.log(2)], rtol=1e-5)
  # the bag's term: -(1/W) log mean over the bag of prod over steps of the mass on the span
  bag = np.array([2, 3, 4, 5])
  expected = -math.log(np.mean([0.5 ** window if lag in (3, 4) else EPS ** window for lag in bag])) / window
  assert float(local_alignment.local_alignment(jnp.asarray(split), bag, radius=0)) == pytest.approx(expected, rel=1e-4)


def test_cross_attention_over_shifted_units_is_local_at_the_shift():
  """Video step features equal to the current's units `lead` steps earlier: with identity query, key
  and value maps and a temperature of 0.02, each step attends to its own unit, and the local term is
  lowest at lag `lead` alone (within `radius` of it with a radius)."""
  window, units, lead = 6, 20, 5
  dim = units                                            # one orthogonal feature vector per unit
  current = np.eye(units, dtype=np.float32)[np.random.default_rng(0).permutation(units)][None]
  video = current[:, units - window - lead:units - lead]
  eye = lambda scale: {"kernel": scale * np.eye(dim, dtype=np.float32), "bias": np.zeros(dim, np.float32)}
  params = {"positions": np.zeros((window, dim), np.float32), "log_temperature": np.float32(math.log(0.02)),
            "query": eye(3.0), "key": eye(1.0), "value": eye(1.0)}
  attention, attended = align_model.CrossAlignment(dim).apply({"params": params}, video, current)
  np.testing.assert_allclose(np.asarray(attended), video, atol=1e-3)
  per_lag = np.asarray(local_alignment.local_per_lag(attention, np.arange(12), radius=0))[0]
  assert int(np.argmin(per_lag)) == lead and np.sum(per_lag <= per_lag[lead] + 1e-3) == 1
  per_lag = np.asarray(local_alignment.local_per_lag(attention, np.arange(12), radius=1))[0]
  np.testing.assert_array_equal(np.flatnonzero(per_lag <= per_lag[lead] + 1e-3), [lead - 1, lead, lead + 1])
  term = lambda bag: float(local_alignment.local_alignment(attention, np.array(bag), radius=0))
  # a bag that holds the lead costs only the uniform prior over its 4 lags; one without it, missing steps
  assert term([0, 3, lead, 9]) == pytest.approx(math.log(4) / window, abs=1e-3) and term([0, 3, 7, 9]) > 5


@pytest.fixture(scope="module")
def tasks(tiny_job):
  default = align_task.Task.prepare(tiny_job("align"))
  return default, align_task.Task(tiny_job("align", "alignvsr,tiny"), default.data)


def test_variant_search_equals_the_default_search_on_identical_embeddings(tasks):
  default, variant = tasks
  variables = variant.init(jax.random.key(0))
  assert set(variables["params"]) - set(default.init(jax.random.key(0))["params"]) == {"cross"}
  shared = {"params": {k: v for k, v in variables["params"].items() if k != "cross"}}
  d_fns, v_fns = default.predict_fns(), variant.predict_fns()
  assert set(d_fns) == set(v_fns) and v_fns["pool_steps"] is d_fns["pool_steps"]
  rng = np.random.default_rng(1)
  video = rng.integers(0, 255, (3, *variant._example["video"].shape[1:])).astype(np.uint8)
  current = rng.normal(10000, 1500, (3, *variant._example["current"].shape[1:])).astype(np.float32)
  geometry = dict(window=variant.window_steps, max_lag=variant.max_lag, step_seconds=2.0)
  found = [lag_search.search(fns["embed"], v, video, current, pool_steps=fns["pool_steps"], **geometry)
           for fns, v in ((d_fns, shared), (v_fns, variables))]
  for key in ("lead_s", "confidence", "similarity"):
    np.testing.assert_array_equal(np.asarray(getattr(found[0], key)), np.asarray(getattr(found[1], key)))


def test_cross_terms_need_the_cross_alignment(tiny_job, tasks):
  config = tiny_job("align", "alignvsr,tiny")
  config.unlock()
  config.model.cross_alignment = False
  with pytest.raises(errors.ConfigError, match="need config.model.cross_alignment=True"):
    align_task.Task(config, tasks[0].data)


def test_tiny_alignvsr_run_writes_a_summary(tiny_job, tmp_path):
  config = tiny_job("align", "alignvsr,tiny")
  loop.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "summary.json") as f:
    summary = json.load(f)
  assert summary["steps"] == config.num_train_steps and summary["events"] >= 1 and "lead_mae_s" in summary
  with open(tmp_path / "metrics.jsonl") as f:
    logged = [json.loads(line) for line in f]
  terms = [row for row in logged if "local" in row]
  assert terms and all(np.isfinite(row["local"]) and np.isfinite(row["global_supervised"]) for row in terms)
  assert os.path.exists(tmp_path / "report.md")
