"""What differs between the JAX stacks fmjax supports: Colab's (jax 0.7.2, the oldest) to the newest.

Each entry says which versions need it and why; nothing else in fmjax branches on a version.
`.ci/colab-constraints.txt` pins Colab's stack.
"""

import logging
import re
from importlib import metadata

_GRAIN_PROFILING = "Grain multiprocess worker profiling requires jaxlib"


class _DropMessage(logging.Filter):
  def __init__(self, prefix: str):
    super().__init__()
    self.prefix = prefix

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(self.prefix)


def version_below(package: str, release: tuple[int, ...]) -> bool:
  """Whether the installed `package` is older than `release` (numeric parts of its version; absent: False)."""
  try:
    version = metadata.version(package)
  except metadata.PackageNotFoundError:
    return False
  return tuple(int(part) for part in re.findall(r"\d+", version)[:len(release)]) < release


def quiet_known_notices() -> None:
  """Drops log lines that say nothing to a user of fmjax; call before the modules that log them load.

  grain 0.2.18, imported beside a jaxlib whose extension is older than version 448 (Colab's jaxlib 0.7.2
  has 373; 0.10.2 does not log it), logs that its worker profiling needs a newer jaxlib. fmjax never
  turns that profiling on, and the line would precede every job's output (and an `error:` line, which
  should be the only one). The filter drops that one message by its text, where jaxlib is older than 0.11.
  """
  if not version_below("jaxlib", (0, 11)):
    return
  absl = logging.getLogger("absl")
  if not any(isinstance(f, _DropMessage) and f.prefix == _GRAIN_PROFILING for f in absl.filters):
    absl.addFilter(_DropMessage(_GRAIN_PROFILING))
