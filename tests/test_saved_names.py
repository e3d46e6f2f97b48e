"""A run folder is data, not code: a module name read from another run's config.json must be one of fmjax's
own (fmjax.runtime.registry.OWN), so a run folder received from someone else cannot make fmjax import a
module. Here the received run names a module of a package on the path that leaves a marker when imported;
the folders hold what is read before the name is used (config.json, and a one-array step where weights are)."""

import json
import os
import sys
import types

import crash  # tests/ is on the path
import jax.numpy as jnp
import pytest

from configs import fmformer as fmformer_config
from configs import pretrain as pretrain_config
from fmjax.checkpoints import checkpointer, runs
from fmjax.evals import warning
from fmjax.runtime import errors
from fmjax.train.tasks import transfer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLANTED = "planted_models.model"  # the module the received run names
REFUSED = ("is not one of fmjax's own model modules (align, fmformer, hdcid, unicode); a run folder's config may name "
           "only those (a module path is taken only from the command line or a config file you run)")


@pytest.fixture
def planted(tmp_path):
  """(folder to put on the path, marker file): a package whose `model` module writes the marker when imported."""
  folder, marker = tmp_path / "site", tmp_path / "imported"
  package, module = PLANTED.split(".")
  (folder / package).mkdir(parents=True)
  (folder / package / "__init__.py").write_text("")
  (folder / package / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\nModel = dict\n")
  return str(folder), marker


def received(folder, config: dict, weights: bool = False) -> str:
  """A run folder holding `config` as its config.json and, with `weights`, a step of one array."""
  directory = os.path.join(folder, "checkpoints")
  with checkpointer.Checkpointer(directory, every_steps=1, config_json=json.dumps(config)) as ckpt:
    if weights:
      ckpt.maybe_save(1, {"params": {"w": jnp.zeros(2)}, "model_state": {}, "aux": {}}, force=True)
  return str(folder)


def test_cli_transfer_from_a_run_naming_a_module_outside_fmjax_imports_nothing(planted, cli_env, tmp_path):
  site, marker = planted
  config = json.loads(pretrain_config.get_config("tiny").to_json())
  source = received(tmp_path / "received", {**config, "model_name": PLANTED})
  env = {**cli_env, "PYTHONPATH": os.pathsep.join([site, cli_env.get("PYTHONPATH", "")])}
  result = crash.run_cli(tmp_path, env, f"--config={os.path.join(REPO, 'configs', 'transfer.py')}:tiny",
                         "--config.num_devices=1", f"--config.init_from={source}", f"--workdir={tmp_path / 'out'}")
  assert result.returncode == 1, result.stderr
  assert result.stderr.strip().splitlines() == [
      f"error: {source}/checkpoints/config.json: model_name={PLANTED!r} {REFUSED}"], result.stderr
  assert not marker.exists()


@pytest.mark.parametrize("key, name", [("model_name", PLANTED), ("model_name", "json"), ("model_name", "attention"),
                                       ("job", PLANTED)])
def test_fmformer_from_and_model_of_a_run_naming_a_module_outside_fmjax_import_nothing(planted, tmp_path,
                                                                                     monkeypatch, key, name):
  site, marker = planted
  monkeypatch.syspath_prepend(site)
  config = json.loads(fmformer_config.get_config("current,tiny").to_json())
  if key == "job":  # runs saved before configs named their model: the job names it
    del config["model_name"]
  source = received(tmp_path / "received", {**config, key: name}, weights=True)
  expected = f"{source}/checkpoints/config.json: {key}={name!r} {REFUSED}"
  with pytest.raises(errors.ConfigError) as error:
    runs.model_of(runs.read(source))
  assert str(error.value) == expected
  if key == "model_name":  # the warning evaluator's fmformer_from (a job='fmformer' run)
    with pytest.raises(errors.ConfigError) as error:
      warning.Evaluator.supervised_model(types.SimpleNamespace(fmformer_from=source))
    assert str(error.value) == expected
  assert not marker.exists() and PLANTED not in sys.modules


def test_transfer_takes_a_module_path_for_its_model_from_its_own_config_only(tmp_path):
  config = json.loads(pretrain_config.get_config("tiny").to_json())
  source = received(tmp_path / "received", {**config, "model_name": "json.tool"})
  with pytest.raises(errors.ConfigError, match=f"model_name='json.tool' {REFUSED}".replace("(", r"\(")
                     .replace(")", r"\)").replace(".", r"\.")):
    transfer.pretrain_config(source)
  assert transfer.pretrain_config(source, "my_package.my_model").model_name == "my_package.my_model"
  older = {k: v for k, v in config.items() if k != "model_name"}  # saved before configs named their model
  assert transfer.pretrain_config(received(tmp_path / "older", older)).model_name == "unicode"
