"""Installs fmjax into a running Colab runtime without changing the packages Colab preinstalled.

The notebook's first cell calls `install` on its clone. Colab's jax and jaxlib must keep matching the accelerator
backend it ships beside them (libtpu on a TPU runtime, the CUDA plugin on a GPU one): an install that upgraded jax
alone would leave a runtime no restart repairs. So, before installing anything, pip resolves the install without
doing it (`pip install --dry-run --report`); if it would change any preinstalled package, `install` stops with one
message naming each change and installs nothing. Otherwise pip installs with every preinstalled package pinned
(a constraints file of their versions), and the accelerator stack is checked again afterwards.

TensorBoard is installed beside fmjax where the runtime lacks it (Colab's TPU runtime does; the GPU and CPU runtimes
ship it), so the notebook's last cell can show the runs' curves.

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


def _failed(what: str, result: subprocess.CompletedProcess) -> SystemExit:
  lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
  return SystemExit(f"error: {what} failed (pip exit status {result.returncode}): "
                    f"{lines[-1] if lines else 'no output'}")


def install(requirements: list[str], pip_args: tuple[str, ...] = ()) -> dict[str, str]:
  """pip-installs `requirements` (paths or names) leaving every preinstalled package as it is.

  Raises SystemExit with one `error:` message, installing nothing, when pip would change a preinstalled package
  or cannot resolve; `pip_args` go to both pip calls (an index, `--no-index --find-links`, ...). Returns
  {name: version} of the packages it added.
  """
  before = installed()
  with tempfile.TemporaryDirectory() as scratch:
    report_path = os.path.join(scratch, "report.json")
    dry = _pip(["install", "--dry-run", "--quiet", "--report", report_path, *pip_args, *requirements])
    if dry.returncode != 0:
      raise _failed(f"resolving {' '.join(requirements)}", dry)
    with open(report_path, encoding="utf-8") as f:
      report = json.load(f)
    changes = planned_changes(report, before)
    if changes:
      raise SystemExit(refusal(changes))
    # Everything else stays pinned: the packages asked for are not (a second run's newer fmjax).
    requested = {canonical(item["metadata"]["name"]) for item in report.get("install", []) if item.get("requested")}
    constraints = os.path.join(scratch, "preinstalled.txt")
    with open(constraints, "w", encoding="utf-8") as f:
      f.writelines(f"{name}=={version}\n" for name, version in sorted(before.items()) if name not in requested)
    done = _pip(["install", "--quiet", "-c", constraints, *pip_args, *requirements])
    if done.returncode != 0:
      raise _failed(f"installing {' '.join(requirements)}", done)
  after = installed()
  moved = {n: (before[n], after.get(n, "none")) for n in ACCELERATOR_STACK if n in before and after.get(n) != before[n]}
  if moved:  # pinned above, so pip should never get here; if it did, the runtime is no longer consistent
    raise SystemExit(refusal(moved, done=True))
  return {n: v for n, v in after.items() if before.get(n) != v}


def install_clone(clone: str, pip_args: tuple[str, ...] = ()) -> str:
  """Installs the fmjax clone at `clone`, and TensorBoard where absent; the line the notebook prints."""
  requirements = [clone] + ([] if "tensorboard" in installed() else ["tensorboard"])
  added = install(requirements, pip_args)
  stack = installed()
  kept = ", ".join(f"{n} {stack[n]}" for n in ACCELERATOR_STACK if n in stack)
  return (f"installed {', '.join(f'{n} {v}' for n, v in sorted(added.items())) or 'nothing new'}; "
          f"kept {kept}")
