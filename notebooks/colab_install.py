"""Installs fmjax into a running Colab runtime without changing the packages Colab preinstalled.

The notebook's first cell calls `install_clone` on its clone. Colab's jax and jaxlib must keep matching the
accelerator backend it ships beside them (libtpu on a TPU runtime, the CUDA plugin on a GPU one): an install that
upgraded jax alone would leave a runtime no restart repairs. So pip resolves the install first without doing it
(`pip install --dry-run`), with every preinstalled package pinned at its version: if that resolves, pip installs
exactly that. If it cannot, a second dry run without the pins (`--report`) names each preinstalled package the
install would change, and `install` stops with one message saying so, having installed nothing. The accelerator
stack is checked again after the install.

"Preinstalled" means what the runtime held before the notebook's first install (recorded in a file the first
run writes), so a second run, with a newer fmjax, may move what the first one added. TensorBoard is installed
beside fmjax where the runtime lacks it (Colab's TPU runtime does; its GPU and CPU runtimes ship it).

Standard library only: it runs before fmjax and its dependencies are installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata

# JAX and the accelerator backends built for one JAX version: these must keep their versions.
ACCELERATOR_STACK = ("jax", "jaxlib", "libtpu", "libtpu-nightly", "jax-cuda12-plugin", "jax-cuda12-pjrt",
                     "jax-cuda13-plugin", "jax-cuda13-pjrt")


def canonical(name: str) -> str:
  """A distribution's name as pip compares it (PEP 503): lower case, runs of -_. as one '-'."""
  return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
  """{canonical name: version} of the distributions this interpreter imports from."""
  return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def planned_changes(report: dict, before: dict[str, str]) -> dict[str, tuple[str, str]]:
  """{name: (installed version, version pip would install)} for the preinstalled packages a pip report changes.

  `report` is pip's installation report (`--report`, format version 1): its `install` list holds each
  distribution pip would install, with its metadata, `requested` for those asked for by name or path. Those may
  change (fmjax itself, installed again from a newer clone); their dependencies may not.
  """
  changes = {}
  for item in report.get("install", []):
    name, version = canonical(item["metadata"]["name"]), item["metadata"]["version"]
    if name in before and before[name] != version and not item.get("requested"):
      changes[name] = (before[name], version)
  return changes


class InstallRefused(Exception):
  """The install would change (or changed) a preinstalled package, or pip failed: one `error:` line.

  IPython shows an exception that has `_render_traceback_` as the lines it returns, so the notebook shows the
  message alone (and "Run all" stops there); elsewhere it is an ordinary exception.
  """

  def _render_traceback_(self) -> list[str]:
    return [str(self)]


def refusal(changes: dict[str, tuple[str, str]], *, done: bool = False) -> str:
  """The one message that stops the install (`done`: pip already made the changes), accelerator stack first."""
  stack = [n for n in changes if n in ACCELERATOR_STACK]
  listed = ", ".join(f"{n} {changes[n][0]} -> {changes[n][1]}" for n in stack + sorted(set(changes) - set(stack)))
  if done:
    return (f"error: installing fmjax changed Colab's preinstalled {listed}, so the accelerator backend no longer "
            f"matches jax: Runtime -> Disconnect and delete runtime, then report it.")
  why = ("this runtime's accelerator backend is built for the jax it ships, and would no longer match"
         if stack else "the notebook keeps Colab's preinstalled packages as they are")
  return (f"error: installing fmjax would change Colab's preinstalled {listed}; {why}. Nothing was installed. "
          f"fmjax's install_requires (setup.cfg) must admit these versions: use a branch or release of fmjax "
          f"that does (FMJAX_REF), or report it.")


def _pip(args: list[str]) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)


def _failed(what: str, result: subprocess.CompletedProcess) -> InstallRefused:
  """pip's errors in one line: its `ERROR:` lines and, for a conflict, what causes it."""
  lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
  start = next((i for i, line in enumerate(lines) if line.startswith("The conflict is caused by")), len(lines))
  end = next((i for i in range(start, len(lines)) if lines[i].startswith("To fix")), len(lines))
  kept = [line for line in lines if line.startswith("ERROR:") and "ResolutionImpossible" not in line] + lines[start:end]
  return InstallRefused(f"error: {what} failed (pip exit status {result.returncode}): "
                        f"{'; '.join(dict.fromkeys(kept)) or (lines[-1] if lines else 'no output')}")


def _requested(requirements: list[str], pip_args: tuple[str, ...], scratch: str) -> set[str]:
  """The names of `requirements` (paths included), from a dry run that resolves no dependency."""
  report_path = os.path.join(scratch, "requested.json")
  result = _pip(["install", "--dry-run", "--quiet", "--no-deps", "--report", report_path, *pip_args, *requirements])
  if result.returncode != 0:
    raise _failed(f"finding {' '.join(requirements)}", result)
  with open(report_path, encoding="utf-8") as f:
    return {canonical(item["metadata"]["name"]) for item in json.load(f).get("install", [])}


def install(requirements: list[str], pip_args: tuple[str, ...] = (), protected: dict[str, str] | None = None
            ) -> dict[str, str]:
  """pip-installs `requirements` (paths or names) leaving the `protected` packages ({name: version}; default:
  every installed one) as they are, except those `requirements` name.

  Raises InstallRefused with one `error:` message, having installed nothing, when that cannot be done or pip
  fails; `pip_args` go to every pip call (an index, `--no-index --find-links`, ...). Returns {name: version} of
  the packages it added or changed.
  """
  before = installed()
  protected = before if protected is None else protected
  with tempfile.TemporaryDirectory() as scratch:
    pinned = {n: before[n] for n in protected if n in before}
    for name in _requested(requirements, pip_args, scratch):
      pinned.pop(name, None)  # a second run's newer fmjax may replace the first's
    constraints = os.path.join(scratch, "preinstalled.txt")
    with open(constraints, "w", encoding="utf-8") as f:
      f.writelines(f"{name}=={version}\n" for name, version in sorted(pinned.items()))
    if _pip(["install", "--dry-run", "--quiet", "-c", constraints, *pip_args, *requirements]).returncode != 0:
      report_path = os.path.join(scratch, "report.json")
      free = _pip(["install", "--dry-run", "--report", report_path, *pip_args, *requirements])  # not --quiet:
      # pip says what causes a conflict at its info level
      if free.returncode != 0:
        raise _failed(f"resolving {' '.join(requirements)}", free)
      with open(report_path, encoding="utf-8") as f:
        changes = planned_changes(json.load(f), pinned)
      if changes:
        raise InstallRefused(refusal(changes))
    done = _pip(["install", "-c", constraints, *pip_args, *requirements])
    if done.returncode != 0:
      raise _failed(f"installing {' '.join(requirements)}", done)
  after = installed()
  moved = {n: (before[n], after.get(n, "none")) for n in ACCELERATOR_STACK if n in before and after.get(n) != before[n]}
  if moved:  # pinned above, so pip should never get here; if it did, the runtime is no longer consistent
    raise InstallRefused(refusal(moved, done=True))
  return {n: v for n, v in after.items() if before.get(n) != v}


def install_clone(clone: str, pip_args: tuple[str, ...] = (), record: str | None = None) -> str:
  """Installs the fmjax clone at `clone`, and TensorBoard where absent; the line the notebook prints.

  `record`: a JSON file of the runtime's packages before fmjax's first install, written by the first call and
  read by the later ones, which then protect those packages only.
  """
  if record and os.path.exists(record):
    with open(record, encoding="utf-8") as f:
      protected = json.load(f)
  else:
    protected = installed()
    if record:
      with open(record, "w", encoding="utf-8") as f:
        json.dump(protected, f, indent=0, sort_keys=True)
  requirements = [clone] + ([] if "tensorboard" in installed() else ["tensorboard"])
  added = install(requirements, pip_args, protected)
  stack = installed()
  kept = ", ".join(f"{n} {stack[n]}" for n in ACCELERATOR_STACK if n in stack)
  return (f"installed {', '.join(f'{n} {v}' for n, v in sorted(added.items())) or 'nothing new'}; "
          f"kept {kept}")
