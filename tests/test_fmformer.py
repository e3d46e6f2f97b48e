"""FmFormer models and the official-weight converter, checked against the official PyTorch fixtures."""

import json
import os

import jax
import numpy as np
import pytest

from fmjax.convert import export, torch_fmformer
from fmjax.models import fmformer, layers, tokenizers

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures", "fmformer_torch")
CASES = {"vicu_cls": 1e-4, "vicu_seg": 1e-3, "video_cls": 1e-4, "current_cls": 1e-4}


def fixture_path(name: str) -> str:
  path = os.path.join(FIXTURES, f"{name}.npz")
  if not os.path.exists(path):
    pytest.skip(f"official fixtures not found at {FIXTURES} (they live in ../shared beside the repo)")
  return path


def official_inputs(model, archive) -> tuple[np.ndarray, ...]:
  video = archive["inputs/video"].transpose(0, 2, 3, 4, 1)  # (B, C, T, H, W) -> (B, T, H, W, C)
  current = archive["inputs/current"]
  return {fmformer.FmFormer: (video, current), fmformer.VideoFormer: (video,),
          fmformer.CurrentFormer: (current,)}[type(model)]


def expected_logits(archive) -> np.ndarray:
  logits = archive["outputs/logits"]
  return logits.transpose(0, 2, 3, 1) if logits.ndim == 4 else logits  # segmentation: NCHW -> NHWC


@pytest.mark.parametrize("name", sorted(CASES))
def test_converted_fixture_reproduces_official_logits(name):
  path = fixture_path(name)
  model, variables = torch_fmformer.convert(path)
  with np.load(path) as archive:
    logits = np.asarray(jax.jit(model.apply)(variables, *official_inputs(model, archive)))
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
    logits = np.asarray(jax.jit(model.apply)(variables, *official_inputs(model, archive)))
    assert np.abs(logits - expected_logits(archive)).max() <= 1e-4


def test_cli_export_round_trip(tmp_path, capsys):
  out = str(tmp_path / "converted")
  assert torch_fmformer.main(["convert", fixture_path("vicu_seg"), out]) == 0
  assert torch_fmformer.main(["convert", fixture_path("vicu_seg"), out]) == 1  # never overwrites
  assert "already exists" in capsys.readouterr().err
  model, variables = export.load(out)
  assert json.load(open(os.path.join(out, "model.json")))["class"] == "FmFormer"
  with np.load(fixture_path("vicu_seg")) as archive:
    logits = np.asarray(jax.jit(model.apply)(variables, *official_inputs(model, archive)))
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
