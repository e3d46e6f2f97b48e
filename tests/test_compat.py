"""fmjax.compat: the notices of older stacks that fmjax drops, and only those."""

import logging

from fmjax import compat


def test_grains_profiling_notice_is_dropped_and_nothing_else():
  logger = logging.getLogger("absl")
  before = list(logger.filters)
  notice = logging.LogRecord("absl", logging.WARNING, "profiler.py", 141, compat._GRAIN_PROFILING + " extension "
                             "version 448 or later (jaxlib >= 0.11.0). Current version: 373.", None, None)
  other = logging.LogRecord("absl", logging.WARNING, "x.py", 1, "Grain says something else", None, None)
  try:
    compat.quiet_known_notices()
    compat.quiet_known_notices()  # once is enough
    assert len(logger.filters) == len(before) + (0 if any(isinstance(f, compat._DropMessage) for f in before) else 1)
    assert not logger.filter(notice) and logger.filter(other)
  finally:
    logger.filters[:] = before
