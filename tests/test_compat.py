"""fmjax.runtime.compat: the notices of older stacks that fmjax drops, and only those; the suite's deprecation filters."""

import logging
import warnings

import pytest

from fmjax.runtime import compat

pytestmark = pytest.mark.stack  # also run on Colab's versions (.ci/run, setup.cfg)


@pytest.mark.parametrize("old_jaxlib", [True, False])
def test_grains_profiling_notice_is_dropped_below_jaxlib_0_11_and_nothing_else(old_jaxlib, monkeypatch):
  monkeypatch.setattr(compat, "version_below", lambda package, release: old_jaxlib and (package, release) == (
      "jaxlib", (0, 11)))
  logger = logging.getLogger("absl")
  before = list(logger.filters)
  logger.filters[:] = [f for f in before if not isinstance(f, compat._DropMessage)]
  notice = logging.LogRecord("absl", logging.WARNING, "profiler.py", 141, compat._GRAIN_PROFILING + " extension "
                             "version 448 or later (jaxlib >= 0.11.0). Current version: 373.", None, None)
  other = logging.LogRecord("absl", logging.WARNING, "x.py", 1, "Grain says something else", None, None)
  try:
    compat.quiet_known_notices()
    compat.quiet_known_notices()  # once is enough
    assert sum(isinstance(f, compat._DropMessage) for f in logger.filters) == int(old_jaxlib)
    assert logger.filter(notice) != old_jaxlib and logger.filter(other)
  finally:
    logger.filters[:] = before


def test_version_below_compares_the_installed_release():
  assert compat.version_below("jax", (99,)) and not compat.version_below("jax", (0, 4))
  assert not compat.version_below("no-such-distribution", (1,))


@pytest.mark.parametrize("module, fails", [("fmjax.train.step", True), ("fmjax", True), ("configs.pretrain", True),
                                           ("common", True), ("test_train", True), ("crash", True), ("toy.job", True),
                                           ("optax._src.alias", False), ("jaxlib", False), ("matplotlib.text", False)])
def test_deprecations_from_fmjax_fail_the_suite_and_others_show(module, fails):
  """setup.cfg's filterwarnings as pytest applies them: a DeprecationWarning attributed to fmjax's code (what a
  deprecated JAX/flax/optax API warns at its caller, stacklevel 2) raises; a third-party one is only recorded."""
  if fails:
    with pytest.raises(DeprecationWarning, match="old API"):
      warnings.warn_explicit("old API", DeprecationWarning, f"{module.replace('.', '/')}.py", 1, module=module)
  else:
    with warnings.catch_warnings(record=True) as shown:  # keeps the configured filters (pytest.warns resets them)
      warnings.warn_explicit("old API", DeprecationWarning, f"{module.replace('.', '/')}.py", 1, module=module)
    assert [str(w.message) for w in shown] == ["old API"]


@pytest.mark.parametrize("module, message", [
    ("matplotlib._fontconfig_pattern", "'resetCache' deprecated - use 'reset_cache'"),
    ("matplotlib._mathtext", "'endQuoteChar' argument is deprecated, use 'end_quote_char'"),
    ("pyparsing.util", "'parseAll' argument is deprecated, use 'parse_all'")])
def test_matplotlibs_pyparsing_notices_are_filtered_by_their_text(module, message):
  with warnings.catch_warnings(record=True) as shown:
    warnings.warn_explicit(message, DeprecationWarning, "x.py", 1, module=module)
  assert shown == []
