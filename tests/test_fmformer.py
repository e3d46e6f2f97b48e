"""FmFormer models and the official-weight converter, checked against the official PyTorch fixtures."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.convert import export, torch_fmformer
from fmjax.models import fmformer, layers, tokenizers
from fmjax.runtime import errors

pytestmark = pytest.mark.stack  # also run on Colab's versions (.ci/run, setup.cfg)

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures", "fmformer_torch")
CASES = {"vicu_cls": 1e-4, "vicu_seg": 1e-3, "video_cls": 1e-4, "current_cls": 1e-4}


def fixture_path(name: str) -> str:
  path = os.path.join(FIXTURES, f"{name}.npz")
  if not os.path.exists(path):
    pytest.skip(f"official fixtures not found at {FIXTURES} (they live in ../shared beside the repo)")
  return path


def official_inputs(archive) -> dict[str, np.ndarray]:
  """Both inputs by name; each model takes the ones it needs."""
  return {"video": archive["inputs/video"].transpose(0, 2, 3, 4, 1),  # (B, C, T, H, W) -> (B, T, H, W, C)
          "current": archive["inputs/current"]}


def expected_logits(archive) -> np.ndarray:
  logits = archive["outputs/logits"]
  return logits.transpose(0, 2, 3, 1) if logits.ndim == 4 else logits  # segmentation: NCHW -> NHWC


@pytest.mark.parametrize("name", sorted(CASES))
def test_converted_fixture_reproduces_official_logits(name):
  path = fixture_path(name)
  model, variables = torch_fmformer.convert(path)
  with np.load(path) as archive:
    logits = np.asarray(jax.jit(model.apply)(variables, **official_inputs(archive)))
    want = expected_logits(archive)
  assert logits.shape == want.shape
  assert np.abs(logits - want).max() <= CASES[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_inferred_from_shapes_equals_stored_config(name):
  path = fixture_path(name)
  state, (class_name, kwargs) = torch_fmformer.load_state_dict(path)
  inferred = torch_fmformer.model_from_official(*torch_fmformer.infer_official_config(state))
  assert export.model_fields(inferred) == export.model_fields(torch_fmformer.model_from_official(class_name, kwargs))


def _state_and_config(name):
  state, config = torch_fmformer.load_state_dict(fixture_path(name))
  return dict(state), config


def test_unknown_missing_and_misshaped_keys_are_named():
  state, config = _state_and_config("current_cls")
  model = torch_fmformer.model_from_official(*config)
  with pytest.raises(torch_fmformer.ConversionError, match=r"unknown keys \['extra.weight'\]"):
    torch_fmformer.convert_state_dict({**state, "extra.weight": np.zeros(3)}, model)
  without = {k: v for k, v in state.items() if k != "transformer.norm.bias"}
  with pytest.raises(torch_fmformer.ConversionError, match=r"missing keys \['transformer.norm.bias'\]"):
    torch_fmformer.convert_state_dict(without, model)
  with pytest.raises(torch_fmformer.ConversionError, match=r"mlp_head.weight: shape \(3, 96\)"):
    torch_fmformer.convert_state_dict({**state, "mlp_head.weight": np.zeros((3, 96))}, model)


def test_pth_file_converts_like_the_npz(tmp_path):
  torch = pytest.importorskip("torch", reason="the optional torch extra is not installed")
  state, _ = _state_and_config("video_cls")
  pth = str(tmp_path / "video.pth")
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, pth)
  model, variables = torch_fmformer.convert(pth)  # config inferred from shapes
  with np.load(fixture_path("video_cls")) as archive:
    logits = np.asarray(jax.jit(model.apply)(variables, **official_inputs(archive)))
    assert np.abs(logits - expected_logits(archive)).max() <= 1e-4


def test_cli_export_round_trip(tmp_path, capsys):
  out = str(tmp_path / "converted")
  assert torch_fmformer.main(["convert", fixture_path("vicu_seg"), out]) == 0
  assert torch_fmformer.main(["convert", fixture_path("vicu_seg"), out]) == 1  # never overwrites
  assert "already exists" in capsys.readouterr().err
  model, variables = export.load(out)
  assert json.load(open(os.path.join(out, "model.json")))["class"] == "FmFormer"
  with np.load(fixture_path("vicu_seg")) as archive:
    logits = np.asarray(jax.jit(model.apply)(variables, **official_inputs(archive)))
    assert np.abs(logits - expected_logits(archive)).max() <= 1e-3
  assert torch_fmformer.main(["convert", str(tmp_path / "nothing.npz"), str(tmp_path / "x")]) == 1
  assert "nothing.npz: no such file" in capsys.readouterr().err


def test_patchify_orders_features_p1_p2_pf_c():
  # Each value encodes its coordinates: t*1000 + h*100 + w*10 + c.
  t, h, w, c = np.meshgrid(np.arange(4), np.arange(4), np.arange(4), np.arange(2), indexing="ij")
  video = (t * 1000 + h * 100 + w * 10 + c)[None].astype(np.float32)
  tokens = np.asarray(tokenizers.patchify(video, patch_size=2, frame_patch=2))
  assert tokens.shape == (1, 2 * 2 * 2, 2 * 2 * 2 * 2)
  # token (f=1, h=0, w=1) is index 1*4 + 0*2 + 1 = 5; feature (p1=1, p2=0, pf=1, c=1) is index 8+0+2+1 = 11
  assert tokens[0, 5, 11] == (2 * 1 + 1) * 1000 + (0 * 2 + 1) * 100 + (1 * 2 + 0) * 10 + 1
  assert tokens[0, 0, :4].tolist() == [0, 1, 1000, 1001]  # p1=0, p2=0: pf=0 c=0,1 then pf=1 c=0,1


def test_upsample_matches_a_direct_transposed_convolution():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 2, 3, 4)).astype(np.float32)
  kernel = rng.normal(size=(2, 2, 4, 5)).astype(np.float32)
  bias = rng.normal(size=(5,)).astype(np.float32)
  out = np.asarray(layers.Upsample2x(5).apply({"params": {"kernel": kernel, "bias": bias}}, x))
  want = np.zeros((1, 4, 6, 5), np.float32)
  for i in range(2):
    for j in range(3):
      for a in range(2):
        for b in range(2):
          want[0, 2 * i + a, 2 * j + b] = x[0, i, j] @ kernel[a, b] + bias
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fields, message", [
    (dict(image_size=60), "image_size=60 is not divisible by patch_size=8"),
    (dict(frames=9), "frames=9 is not divisible by frame_patch=2"),
    (dict(task="detection"), "task='detection' is not one of"),
])
def test_bad_geometry_is_rejected_with_the_value(fields, message):
  with pytest.raises(ValueError, match=message):
    fmformer.FmFormer(**fields)


def test_wrong_input_shape_is_rejected():
  model = fmformer.CurrentFormer(current_len=8, dim=16, depth=1, heads=2, head_dim=8, mlp_dim=32)
  with pytest.raises(AssertionError):
    model.init(jax.random.PRNGKey(0), np.zeros((1, 9, 3), np.float32))


# ---------------------------------------------------------------------------------------------- inputs by name

TINY = dict(image_size=16, patch_size=8, frames=2, frame_patch=2, dim=16, depth=1, heads=2, head_dim=8,
            mlp_dim=32, current_len=8)


def tiny_inputs() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {"video": rng.uniform(0, 255, (2, 2, 16, 16, 3)).astype(np.float32),
          "current": rng.normal(size=(2, 8, 3)).astype(np.float32)}


@pytest.mark.parametrize("variant, cls, inputs", [
    ("cross", fmformer.FmFormer, ("video", "current")),
    ("video", fmformer.VideoFormer, ("video",)),
    ("current", fmformer.CurrentFormer, ("current",)),
])
def test_keyword_and_documented_positional_calls_agree(variant, cls, inputs):
  model = fmformer.Model(variant, **TINY)
  assert type(model) is cls and cls.inputs == model.inputs == inputs
  given = tiny_inputs()
  variables = model.init(jax.random.PRNGKey(0), **given)  # the unused input is ignored
  by_name = model.apply(variables, **given)
  needed = model.apply(variables, **{name: given[name] for name in model.inputs})
  positional = model.apply(variables, *(given[name] for name in inputs))  # (video, current) / (video) / (current)
  assert by_name.shape == (2, 2)
  np.testing.assert_array_equal(by_name, needed)
  np.testing.assert_array_equal(by_name, positional)


@pytest.mark.parametrize("variant, given, message", [
    ("current", {"video": None}, r"^CurrentFormer needs current= \(B, 8, 3\); got none"),
    ("video", {"current": None}, r"^VideoFormer needs video= \(B, 2, 16, 16, 3\); got none"),
    ("cross", {"video": None}, r"^FmFormer needs current= \(B, 8, 3\); got none"),
])
def test_missing_input_is_named(variant, given, message):
  given = {name: tiny_inputs()[name] for name in given}
  with pytest.raises(errors.ConfigError, match=message) as error:
    fmformer.Model(variant, **TINY).init(jax.random.PRNGKey(0), **given)
  assert "\n" not in str(error.value)


def test_factory_takes_one_flat_config_for_any_variant():
  config = dict(variant="current", task="classification", image_size=64, patch_size=8, frame_patch=2, dim=96,
                depth=6, heads=3, head_dim=32, mlp_dim=384, num_classes=2, dilated=True, pool="cls",
                positions="learned", dtype="float32", frames=10, current_len=240, bn_axis_name="data")
  model = fmformer.Model(**config)
  assert type(model) is fmformer.CurrentFormer and model.current_len == 240 and model.dtype == jnp.float32
  video = fmformer.Model(**{**config, "variant": "video", "dtype": "bfloat16"})
  assert type(video) is fmformer.VideoFormer and video.dtype == jnp.bfloat16 and video.bn_axis_name == "data"
  cross = fmformer.Model(**{**config, "variant": "cross", "task": "segmentation"})
  assert type(cross) is fmformer.FmFormer and cross.task == "segmentation"
  assert type(fmformer.Model()) is fmformer.FmFormer


@pytest.mark.parametrize("fields, message", [
    (dict(variant="cross", depht=2), r"no model variant has the field 'depht'"),
    (dict(variant="both"), r"variant='both' is not one of \('cross', 'video', 'current'\)"),
    (dict(variant="current", task="segmentation"), r"segmentation' needs video: use model variant 'cross' or 'video'"),
    (dict(variant="current", task="detection"), r"task='detection' is not one of"),
    (dict(variant="video", dtype="float33"), r"dtype='float33' is not a dtype"),
])
def test_factory_rejects_bad_configs_with_the_value(fields, message):
  with pytest.raises(errors.ConfigError, match=message):
    fmformer.Model(**fields)
