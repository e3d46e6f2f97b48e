"""Writing data folders so that a crash at any moment leaves nothing a rerun trips over.

    with locks.exclusive(lock_file):          # fmjax.runtime.locks: one writer at a time
      with staging.staged(final) as partial:  # write into `partial`; it becomes `final` at the end
        ...

`staged` writes into `<final>.partial`, removes what a killed run left there first, and renames it
into place only when the block finishes; a block that raises removes it. An `OSError` (no space
left, a file that cannot be written) leaves the block as a `DataError` naming the folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

from fmjax.runtime import console, errors


def remove_leftover(path: str, what: str) -> None:
  """Removes `path` (a folder a killed run left), saying so."""
  if os.path.lexists(path):
    console.say(f"removing {path}, left by {what} that did not finish")
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staged(final: str, what: str = "writing") -> Iterator[str]:
  """A fresh `<final>.partial` folder, renamed to `final` (which must be missing or empty) when the
  block ends; removed if the block raises. `what` names the work in messages ('generating ...')."""
  partial = f"{final.rstrip(os.sep)}.partial"
  parent = os.path.dirname(os.path.abspath(partial))
  if not os.access(parent, os.W_OK) or (os.path.isdir(final) and os.path.ismount(final)):
    raise errors.WorkdirError(f"{final}: {what} writes into {partial} first and renames it into place; "
                              f"{parent} cannot be written or {final} is a mount point: choose a folder inside it")
  remove_leftover(partial, "a run")
  try:
    os.makedirs(partial)
    yield partial
    if os.path.isdir(final) and not os.listdir(final):
      os.rmdir(final)
    os.replace(partial, final)
  except BaseException as e:
    shutil.rmtree(partial, ignore_errors=True)
    if isinstance(e, OSError) and not isinstance(e, errors.UserError):  # the machine's: no space left
      raise errors.DataError(f"{e.filename or final}: {what} failed: {e.strerror or e}; nothing was kept, "
                             "a rerun starts again") from None
    raise
