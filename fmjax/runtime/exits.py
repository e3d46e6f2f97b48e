"""How a command ends on its user's mistake: one `error:` line on stderr and exit status 1, no traceback.

`one_line_errors` wraps the work of the entry points (launch/main.py, launch/data.py, the benches that run
jobs; `fmjax.convert.torch_fmformer`, which returns its status, takes `error_line`): an
`fmjax.runtime.errors.UserError`, or any exception raised from a full disk (a library below may report one as
its own error), ends the process that way; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from fmjax.runtime import errors, files


def error_line(error: BaseException, folder: str) -> str | None:
  """The one `error:` line for `error`: a `UserError`, or an error raised from a full disk (named by the file the
  OS named, else as `folder`, the command's own folder); None for anything else (a bug)."""
  if isinstance(error, errors.UserError):
    return f"error: {error}"
  if files.is_no_space(error):
    return f"error: {files.no_space_of(error, folder)}"
  return None


@contextlib.contextmanager
def one_line_errors(folder: str) -> Iterator[None]:
  """Exits with status 1 and `error_line` on stderr where there is one; other exceptions keep their traceback."""
  try:
    yield
  except Exception as error:
    line = error_line(error, folder)
    if line is None:
      raise
    print(line, file=sys.stderr)
    sys.exit(1)
