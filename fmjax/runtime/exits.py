"""How a command ends on its user's mistake: one `error:` line on stderr and exit status 1, no traceback.

`one_line_errors` wraps the work of every entry point (launch/main.py, launch/data.py, the benches that run
jobs): an `fmjax.runtime.errors.UserError`, or any exception raised from a full disk (a library below may report
one as its own error), ends the process that way; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from fmjax.runtime import errors, files


@contextlib.contextmanager
def one_line_errors(folder: str) -> Iterator[None]:
  """Exits with one `error:` line on a `UserError` or a full disk (named by the file the OS named, else as
  `folder`, the command's own folder)."""
  try:
    yield
  except errors.UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)
  except Exception as error:
    if not files.is_no_space(error):
      raise
    print(f"error: {files.no_space_of(error, folder)}", file=sys.stderr)
    sys.exit(1)
