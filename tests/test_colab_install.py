"""The notebook's install cell (notebooks/colab_install.py), offline: real pip runs against hand-made wheels in a
local folder (`--no-index --find-links`), installing into a scratch `--target`, so this environment never changes.
"""

import base64
import configparser
import hashlib
import importlib.util
import json
import os
import zipfile
from importlib import metadata

import pytest

packaging = pytest.importorskip("packaging", reason="the test extra (pip install -e '.[test]') brings packaging")
from packaging.requirements import Requirement

from fmjax.runtime import compat

pytestmark = pytest.mark.stack  # also run on Colab's versions (.ci/run, setup.cfg)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("colab_install", os.path.join(REPO, "notebooks", "colab_install.py"))
colab_install = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(colab_install)
_spec = importlib.util.spec_from_file_location("check_unchanged", os.path.join(REPO, ".ci", "check_unchanged.py"))
check_unchanged = importlib.util.module_from_spec(_spec)  # its reader of constraints files
_spec.loader.exec_module(check_unchanged)

JAX = metadata.version("jax")


def make_wheel(folder: str, name: str, version: str, requires: tuple[str, ...] = ()) -> str:
  """A minimal pure-Python wheel of `name` (one module) depending on `requires`; its path."""
  module = name.replace("-", "_")
  info = f"{module}-{version}.dist-info"
  files = {
      f"{module}.py": "",
      f"{info}/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
          name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
      f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
  }
  record = []
  for path, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record.append(f"{path},sha256={digest},{len(text.encode())}")
  files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
  path = os.path.join(folder, f"{module}-{version}-py3-none-any.whl")
  with zipfile.ZipFile(path, "w") as wheel:
    for name_in_zip, text in files.items():
      wheel.writestr(name_in_zip, text)
  return path


@pytest.fixture
def index(tmp_path):
  """(pip arguments of a local index holding a newer jax than this environment's, scratch target folder)."""
  folder = tmp_path / "index"
  folder.mkdir()
  make_wheel(str(folder), "jax", "99.0")
  make_wheel(str(folder), "jax", JAX)  # --target ignores what is installed: pip fetches even the same jax
  make_wheel(str(folder), "needs-new-jax", "1.0", ("jax>=99",))
  make_wheel(str(folder), "keeps-jax", "1.0", (f"jax=={JAX}",))
  make_wheel(str(folder), "newdep", "1.0")  # an older release that works with this jax ...
  make_wheel(str(folder), "newdep", "2.0", ("jax>=99",))  # ... and a newer one that would upgrade it
  make_wheel(str(folder), "clash", "1.0", ("needs-new-jax", "keeps-jax"))
  make_wheel(str(folder), "tensorboard", "2.20.0")  # what install_clone adds where TensorBoard is absent
  target = tmp_path / "target"
  return ("--no-index", "--find-links", str(folder), "--target", str(target)), target


def test_an_install_that_would_change_jax_stops_with_one_message_and_installs_nothing(index):
  pip_args, target = index
  with pytest.raises(colab_install.InstallRefused) as stopped:
    colab_install.install(["needs-new-jax"], pip_args)
  message = str(stopped.value)
  assert message.startswith("error: installing fmjax would change Colab's preinstalled jax ")
  assert f"jax {JAX} -> 99.0" in message and "accelerator backend" in message and "Nothing was installed" in message
  assert "\n" not in message and stopped.value._render_traceback_() == [message]  # IPython shows this line alone
  assert not target.exists() or not os.listdir(target)
  assert metadata.version("jax") == JAX


def test_an_install_that_keeps_the_preinstalled_packages_goes_ahead(index):
  pip_args, target = index
  added = colab_install.install(["keeps-jax"], pip_args)
  assert (target / "keeps_jax.py").is_file() and (target / f"jax-{JAX}.dist-info").is_dir()
  assert added == {}  # --target: nothing new in this environment itself
  assert metadata.version("jax") == JAX


def test_a_new_dependency_is_taken_at_a_release_that_keeps_the_preinstalled_packages(index):
  """pip alone would take newdep 2.0 and upgrade jax; resolved with jax pinned it takes newdep 1.0."""
  pip_args, target = index
  colab_install.install(["newdep"], pip_args)
  assert (target / "newdep-1.0.dist-info").is_dir() and not (target / "jax-99.0.dist-info").exists()


def test_the_cells_install_of_a_clone_that_would_change_jax_stops(index, tmp_path):
  """install_clone, as the notebook's first cell calls it, on an fmjax (a wheel standing for the clone) whose
  range leaves out this environment's jax."""
  pip_args, target = index
  clones = tmp_path / "clones"
  clones.mkdir()
  newer = make_wheel(str(clones), "fmjax", "9.0", ("jax>=99",))
  record = tmp_path / "preinstalled.json"
  with pytest.raises(colab_install.InstallRefused,
                     match=rf"^error: installing fmjax would change Colab's preinstalled jax {JAX} -> "):
    colab_install.install_clone(newer, pip_args, record=str(record))
  assert not target.exists() or not os.listdir(target)
  assert json.loads(record.read_text())["jax"] == JAX  # the first run's record of the runtime's packages
  line = colab_install.install_clone(make_wheel(str(clones), "fmjax", "9.1", (f"jax=={JAX}",)), pip_args,
                                     record=str(record))
  assert line.startswith("installed nothing new; kept jax ") and f"jaxlib {metadata.version('jaxlib')}" in line
  assert (target / "fmjax-9.1.dist-info").is_dir()


def test_a_later_run_protects_only_what_the_runtime_held_before_the_first(index, tmp_path):
  """A package the first run added is not Colab's: a later run may move it (here the record holds nothing)."""
  pip_args, target = index
  record = tmp_path / "preinstalled.json"
  record.write_text("{}")
  colab_install.install_clone(make_wheel(str(tmp_path), "fmjax", "9.0", ("jax>=99",)), pip_args, record=str(record))
  assert (target / "jax-99.0.dist-info").is_dir()


def test_pip_failures_are_one_error_line_naming_the_cause(index):
  pip_args, _ = index
  with pytest.raises(colab_install.InstallRefused) as missing:
    colab_install.install(["no-such-package"], pip_args)
  message = str(missing.value)
  assert message.startswith("error: finding no-such-package failed (pip exit status 1): ") and "\n" not in message
  assert "No matching distribution found for no-such-package" in message
  with pytest.raises(colab_install.InstallRefused) as conflict:  # clash needs jax 99 and jax as installed at once
    colab_install.install(["clash"], pip_args)
  message = str(conflict.value)
  assert message.startswith("error: resolving clash failed") and "The conflict is caused by" in message
  assert "needs-new-jax 1.0 depends on jax>=99" in message and "\n" not in message


def test_planned_changes_name_only_preinstalled_packages_at_another_version():
  report = {"install": [{"metadata": {"name": "fmjax", "version": "0.2.0"}, "requested": True},
                        {"metadata": {"name": "JAX", "version": "0.10.2"}},
                        {"metadata": {"name": "jaxlib", "version": "0.7.2"}},
                        {"metadata": {"name": "Flax", "version": "0.12.8"}},
                        {"metadata": {"name": "new_package", "version": "1.0"}}]}
  before = {"jax": "0.7.2", "jaxlib": "0.7.2", "flax": "0.11.2", "libtpu": "0.0.21.1", "fmjax": "0.1.0"}
  assert colab_install.planned_changes(report, before) == {"jax": ("0.7.2", "0.10.2"), "flax": ("0.11.2", "0.12.8")}
  message = colab_install.refusal(colab_install.planned_changes(report, before))
  assert "jax 0.7.2 -> 0.10.2, flax 0.11.2 -> 0.12.8" in message  # the accelerator stack first
  assert "accelerator backend" in colab_install.refusal({"libtpu": ("0.0.21.1", "0.0.40")})
  assert "accelerator backend" not in colab_install.refusal({"flax": ("0.11.2", "0.12.8")})


def test_names_compare_as_pip_compares_them():
  assert colab_install.canonical("Jax_Cuda12.Plugin") == "jax-cuda12-plugin"


def install_ranges() -> dict:
  """setup.cfg's install_requires: {canonical name: its version specifier}."""
  parser = configparser.ConfigParser()
  parser.read(os.path.join(REPO, "setup.cfg"))
  return {colab_install.canonical(r.name): r.specifier for r in map(
      Requirement, filter(None, parser["options"]["install_requires"].split("\n")))}


def test_install_ranges_admit_colabs_versions_and_the_newest_served():
  """setup.cfg's ranges hold every version of .ci/colab-constraints.txt (so pip leaves Colab's packages alone) and
  the newest releases this registry serves (jax 0.10.2 and what came with it)."""
  ranges = install_ranges()
  colab = check_unchanged.pins(os.path.join(REPO, ".ci", "colab-constraints.txt"))
  newest = {"jax": "0.10.2", "flax": "0.12.8", "orbax-checkpoint": "0.12.8", "optax": "0.2.8", "grain": "0.2.18"}
  for versions in (colab, newest):
    outside = {n: v for n, v in versions.items() if colab_install.canonical(n) in ranges and
               not ranges[colab_install.canonical(n)].contains(v)}
    assert not outside, f"setup.cfg's install_requires leave out {outside}"
  assert {"jax", "jaxlib", "flax", "orbax-checkpoint", "grain"} <= set(colab)


def test_compats_gates_cover_every_supported_release():
  """fmjax.runtime.compat gates the bugs that no release is known to fix on setup.cfg's upper bounds: raising one
  there fails here until the gate is checked on the new releases and moved with it."""
  ranges = install_ranges()
  for name, bound in compat.SUPPORTED_BELOW.items():
    uppers = [s.version for s in ranges[colab_install.canonical(name)] if s.operator == "<"]
    assert uppers == [".".join(map(str, bound))], (name, uppers, bound)
