"""The errors fmjax raises for its users: bad configs, bad data, unusable checkpoints, diverged training.

Each is raised where the bad input is detected, with a message that names the file, key or value and
what is wrong with it. The command-line entry points print a `UserError` as one `error:` line and exit
non-zero; every other exception is a bug (in fmjax or in code plugged into it) and keeps its traceback.

    UserError
    ├── ConfigError       a config value, flag or path that cannot work (also a ValueError)
    ├── FmfFormatError    an FMF-layout file that is missing or malformed (also a ValueError)
    ├── CheckpointError   a checkpoint that is missing, damaged or made for another model
    ├── WorkdirError      a run directory that cannot be created or written
    ├── DataError         data that cannot be generated, converted or prepared (no space, unreadable)
    └── NonFiniteLoss     training diverged (NaN/inf); the last good checkpoint is kept
"""

from collections.abc import Iterator


class UserError(Exception):
  """Base of the errors a user can fix: printed as one line by the CLI, never as a traceback."""


class ConfigError(UserError, ValueError):
  """A config value, flag or path that cannot work."""


class FmfFormatError(UserError, ValueError):
  """An FMF-layout file that is missing or malformed; the message starts with the file's path."""


class CheckpointError(UserError, RuntimeError):
  """A checkpoint directory that is missing, empty, damaged, or does not match what is being restored."""


class WorkdirError(UserError, OSError):
  """A run directory (or output folder) that cannot be created or written."""


class DataError(UserError, OSError):
  """Data that cannot be generated, converted or prepared: no space left, a file that cannot be read or
  written. The message names the folder or file; what was written before stays usable or is removed."""


class NonFiniteLoss(UserError, RuntimeError):
  """The loss or gradients became NaN/inf; the state was not updated and nothing newer was saved."""


def causes(error: BaseException | None) -> Iterator[BaseException]:
  """`error` and the exceptions it was raised from (`__cause__`, else `__context__`), each once: libraries
  wrap the OS's error (a full disk, a refused read) in their own, and what to tell the user is in the chain."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__
