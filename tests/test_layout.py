"""The package's layers, as the README's Layout lists them: each folder of fmjax imports only from the
folders listed above it, evaluators never from the jobs, and nothing from JAX's private modules. And the
names a run folder may give (fmjax.runtime.registry.OWN) are the packages' own modules."""

import ast
import importlib
import os
import pkgutil

import pytest

from fmjax.runtime import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Bottom to top; a folder may import from any folder before it in this list (and from itself).
LAYERS = ("runtime", "data", "losses", "models", "analysis", "convert", "checkpoints", "evals", "train")


def imports_of(path: str) -> set[str]:
  """The modules a Python file imports (absolute names), at any depth of its code."""
  found = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
    if isinstance(node, ast.ImportFrom) and node.module:
      found.add(node.module)
      found.update(f"{node.module}.{alias.name}" for alias in node.names)
    elif isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
  return found


def package_files():
  for root, _, files in os.walk(os.path.join(REPO, "fmjax")):
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(root, name)
        yield os.path.relpath(path, REPO), imports_of(path)


def test_each_folder_imports_only_from_the_folders_below_it():
  wrong = []
  for path, modules in package_files():
    parts = path.split(os.sep)
    if len(parts) < 3:  # fmjax/__init__.py
      continue
    allowed = set(LAYERS[:LAYERS.index(parts[1]) + 1])
    for module in modules:
      names = module.split(".")
      if names[0] == "fmjax" and len(names) > 1 and names[1] in LAYERS and names[1] not in allowed:
        wrong.append(f"{path} imports {module}")
  assert not wrong, "\n".join(sorted(wrong))


def test_evaluators_import_nothing_from_the_jobs_and_nothing_imports_private_jax():
  for path, modules in package_files():
    assert not any(m.startswith("jax._src") for m in modules), path
    if path.startswith(os.path.join("fmjax", "evals")):
      assert not any(m.startswith("fmjax.train") for m in modules), path


@pytest.mark.parametrize("folder", LAYERS)
def test_every_layer_is_a_folder_of_the_package(folder):
  assert os.path.isfile(os.path.join(REPO, "fmjax", folder, "__init__.py"))


@pytest.mark.parametrize("kind", ["Task", "Evaluator", "Model"])
def test_the_names_a_saved_config_may_give_are_the_packages_own_modules(kind):
  """registry.OWN[kind], the only names a run folder's config.json may give, is every module of the kind's
  package that has the kind's attribute (a Protocol, as fmjax.evals.base's, is none): a module added to fmjax
  is added there too."""
  package = importlib.import_module(registry.PACKAGES[kind])
  own = []
  for info in pkgutil.iter_modules(package.__path__):
    attribute = getattr(importlib.import_module(f"{package.__name__}.{info.name}"), kind, None)
    if attribute is not None and not getattr(attribute, "_is_protocol", False):
      own.append(info.name)
  assert sorted(registry.OWN[kind]) == sorted(own)
