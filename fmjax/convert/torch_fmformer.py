"""Official FmFormer PyTorch state_dict -> fmjax Flax variables (params and BatchNorm statistics).

    model, variables = torch_fmformer.convert("state_dict.pth")     # needs the optional torch extra
    model, variables = torch_fmformer.convert("fixture.npz")        # state_dict/<key> arrays + config_json
    logits = model.apply(variables, video, current)                 # video (B,T,H,W,3) raw, current (B,240,3)
    logits = model.apply(variables, video=video, current=current)   # any variant; it takes its `model.inputs`

The model's constructor arguments come from the file's `config_json` when present, else from the
tensor shapes (with the official patch size 8 and image size 64 unless `overrides` say otherwise).
Official weights were trained on frames in h5py's [W, H] order: feed them clips made with the
pipeline's `official_layout=True`.

CLI: python -m fmjax.convert.torch_fmformer IN.{pth,npz} OUT_DIR   (an orbax checkpoint + model.json)
"""

import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from flax import traverse_util

from fmjax.models import fmformer
from fmjax.runtime import errors, exits

CLASSES = {"ViTForViCu": fmformer.FmFormer, "ViTForVideo": fmformer.VideoFormer,
           "ViTForCurrent": fmformer.CurrentFormer}
_RENAMED = {"image_patch_size": "patch_size", "frame_patch_size": "frame_patch", "additional": "dilated",
            "dim_head": "head_dim", "current_patches": "current_len", "current_patch_dim": "current_dim",
            "num_patches": "current_len", "patch_dim": "current_dim", "PEType": "positions"}
_POSITIONS = {"learnable": "learned", "tri": "sinusoid"}
_INFERENCE_ONLY = ("dropout", "emb_dropout")  # dropout is inactive at inference; fmjax has none


class ConversionError(errors.UserError, ValueError):
  """A state_dict that does not fit the model: names the offending keys."""


def model_from_official(class_name: str, kwargs: Mapping[str, Any]) -> nn.Module:
  """The fmjax model equal to official `class_name(**kwargs)`."""
  if class_name not in CLASSES:
    raise ConversionError(f"unknown official model class {class_name!r}; expected one of {sorted(CLASSES)}")
  fields = {}
  for key, value in kwargs.items():
    if key in _INFERENCE_ONLY:
      continue
    name = _RENAMED.get(key, key)
    fields[name] = _POSITIONS.get(value, value) if key == "PEType" else value
  try:
    return CLASSES[class_name](**fields)
  except TypeError as error:
    raise ConversionError(f"{class_name} config does not fit fmjax: {error}") from None


def _count_layers(state: Mapping[str, np.ndarray]) -> int:
  return 1 + max(int(m.group(1)) for k in state if (m := re.match(r"transformer\.layers\.(\d+)\.", k)))


def infer_official_config(state: Mapping[str, np.ndarray], head_dim: int = 32, patch_size: int = 8,
                          image_size: int = 64, channels: int = 3) -> tuple[str, dict]:
  """Official class and constructor kwargs from tensor shapes; the unidentifiable ones are given."""
  depth = _count_layers(state)
  if "cls_token1" in state:
    class_name, dim = "ViTForViCu", state["cls_token1"].shape[-1]
    qkv, mlp = "transformer.layers.0.0.stream1.to_qkv.weight", "transformer.layers.0.1.ff1.net.1.weight"
    video_embed = "to_patch_embedding1.1.weight"
  else:
    class_name = "ViTForVideo" if "to_patch_embedding.3.weight" in state else "ViTForCurrent"
    dim, video_embed = state["cls_token"].shape[-1], "to_patch_embedding.1.weight"
    qkv, mlp = "transformer.layers.0.0.to_qkv.weight", "transformer.layers.0.1.net.1.weight"
  kwargs = dict(dim=dim, depth=depth, heads=state[qkv].shape[0] // 3 // head_dim, dim_head=head_dim,
                mlp_dim=state[mlp].shape[0], pool="cls")
  if class_name == "ViTForCurrent":
    kwargs.update(num_patches=state["pos_embedding"].shape[1] - 1,
                  patch_dim=state["to_patch_embedding.0.weight"].shape[0],
                  num_classes=state["mlp_head.weight"].shape[0])
    return class_name, kwargs
  segmentation = "head.decode_out.weight" in state
  frame_patch = state[video_embed].shape[0] // (channels * patch_size ** 2)
  grid_tokens = (image_size // patch_size) ** 2
  pos = state["pos_embedding1"] if class_name == "ViTForViCu" else state["pos_embedding.pe"]
  kwargs.update(image_size=image_size, image_patch_size=patch_size, channels=channels, frame_patch_size=frame_patch,
                frames=(pos.shape[1] - 1) // grid_tokens * frame_patch,
                num_classes=state["head.decode_out.weight" if segmentation else "head.mlp_head1.1.weight"].shape[0],
                task="segmentation" if segmentation else "classification",
                additional="get_additional_tokens.pos_embedding" in state)
  if class_name == "ViTForViCu":
    kwargs.update(current_patches=state["pos_embedding2"].shape[1] - 1,
                  current_patch_dim=state["to_patch_embedding2.0.weight"].shape[0])
  else:
    kwargs["PEType"] = "learnable" if "pos_embedding.pe" in state and np.ndim(state["pos_embedding.pe"]) == 3 else "tri"
  return class_name, kwargs


# ----------------------------------------------------------------------------------------------
# Key mapping: (torch key, flax collection, flax path, transform)

def _ln(src: str, dst: str):
  return [(f"{src}.weight", "params", f"{dst}/scale", None), (f"{src}.bias", "params", f"{dst}/bias", None)]


def _dense(src: str, dst: str, bias: bool = True):
  rules = [(f"{src}.weight", "params", f"{dst}/kernel", "dense")]
  return rules + ([(f"{src}.bias", "params", f"{dst}/bias", None)] if bias else [])


def _conv(src: str, dst: str, kind: str = "conv"):
  return [(f"{src}.weight", "params", f"{dst}/kernel", kind), (f"{src}.bias", "params", f"{dst}/bias", None)]


def _embed(src: str, indices: tuple[int, int, int], dst: str):
  norm, proj, token_norm = (f"{src}.{i}" for i in indices)
  return (_ln(norm, f"{dst}/embed/patch_norm") + _dense(proj, f"{dst}/embed/proj")
          + _ln(token_norm, f"{dst}/embed/token_norm"))


def _attention(src: str, dst: str):
  return (_ln(f"{src}.norm", f"{dst}/norm") + _dense(f"{src}.to_qkv", f"{dst}/qkv", bias=False)
          + _dense(f"{src}.to_out.0", f"{dst}/out/proj"))


def _mlp(src: str, dst: str):
  return _ln(f"{src}.0", f"{dst}/norm") + _dense(f"{src}.1", f"{dst}/fc1") + _dense(f"{src}.4", f"{dst}/fc2")


def _refine(src: str, dst: str):
  return _conv(f"{src}.conv1", f"{dst}/conv") + _ln(f"{src}.bn1", f"{dst}/bn") + [
      (f"{src}.bn1.running_mean", "batch_stats", f"{dst}/bn/mean", None),
      (f"{src}.bn1.running_var", "batch_stats", f"{dst}/bn/var", None)]


def _segmentation_head(dilated: bool):
  rules = _conv("head.de_patch_embedding.1", "head/tokens_proj") + _conv("head.decode_out", "head/out")
  stages = [("decode_dilated", "dilated")] if dilated else []
  if dilated:
    rules += _conv("head.de_patch_embedding_dilated.1", "head/dilated_proj")
  for src, dst in stages + [(f"decode{k}", f"decode{k}") for k in (1, 2, 3)]:
    rules += _conv(f"head.{src}.0", f"head/{dst}_up", "conv_transpose") + _refine(f"head.{src}.1", f"head/{dst}_refine")
  return rules


def mapping(model: nn.Module) -> list[tuple[str, str, str, str | None]]:
  """Every official key the model takes, with its Flax collection, path and layout transform.

  The official layout follows the model's inputs: one stream (video or current) or both (cross).
  """
  if "video" not in model.inputs:
    rules = _embed("to_patch_embedding", (0, 1, 2), "current") + _ln("transformer.norm", "final_norm")
    rules += [("cls_token", "params", "current/cls", None), ("pos_embedding", "params", "current/pos", None)]
    rules += _dense("mlp_head", "head")
    for i in range(model.depth):
      rules += _attention(f"transformer.layers.{i}.0", f"layer{i}_attn")
      rules += _mlp(f"transformer.layers.{i}.1.net", f"layer{i}_mlp")
    return rules
  cross = "current" in model.inputs
  rules = _embed("to_patch_embedding1" if cross else "to_patch_embedding", (1, 2, 3), "video/video_tokens")
  rules.append(("cls_token1" if cross else "cls_token", "params", "video/video_tokens/cls", None))
  if cross or model.positions == "learned":
    rules.append(("pos_embedding1" if cross else "pos_embedding.pe", "params", "video/video_tokens/pos", None))
  if model.dilated:
    rules += _embed("get_additional_tokens.to_patch_embedding", (1, 2, 3), "video/dilated_tokens")
    rules.append(("get_additional_tokens.pos_embedding", "params", "video/dilated_tokens/pos", None))
  if cross:
    rules += _embed("to_patch_embedding2", (0, 1, 2), "current")
    rules += [("cls_token2", "params", "current/cls", None), ("pos_embedding2", "params", "current/pos", None)]
  for i in range(model.depth):
    layer = f"transformer.layers.{i}"
    if cross:
      rules += _attention(f"{layer}.0.stream1", f"layer{i}_video_attn")
      rules += _attention(f"{layer}.0.stream2", f"layer{i}_current_attn")
      x, y = f"{layer}.0.cross_attn", f"layer{i}_cross_attn"
      rules += _ln(f"{x}.norm1", f"layer{i}_cross_attn/a_norm") + _ln(f"{x}.norm2", f"layer{i}_cross_attn/b_norm")
      rules += _dense(f"{x}.to_qkv1", f"{y}/a_qkv", False) + _dense(f"{x}.to_qkv2", f"{y}/b_qkv", False)
      rules += _dense(f"{x}.to_out1.0", f"{y}/a_out/proj") + _dense(f"{x}.to_out2.0", f"{y}/b_out/proj")
      rules += _mlp(f"{layer}.1.ff1.net", f"layer{i}_video_mlp") + _mlp(f"{layer}.1.ff2.net", f"layer{i}_current_mlp")
    else:
      rules += _attention(f"{layer}.0", f"layer{i}_attn") + _mlp(f"{layer}.1.net", f"layer{i}_mlp")
  if model.task == "segmentation":
    return rules + _segmentation_head(model.dilated)
  rules += _ln("head.mlp_head1.0", "video_head/norm") + _dense("head.mlp_head1.1", "video_head/dense")
  if cross:
    rules += _ln("head.mlp_head2.0", "current_head/norm") + _dense("head.mlp_head2.1", "current_head/dense")
  return rules


def _ignored(key: str, model: nn.Module) -> bool:
  """Keys the official model holds but never uses in its forward pass."""
  if key.endswith("num_batches_tracked"):
    return True
  if model.inputs == ("video",):
    # The video-only classification head builds a current head it never calls; the 'tri'
    # position table is a fixed buffer fmjax recomputes.
    return key.startswith("head.mlp_head2.") or (key == "pos_embedding.pe" and model.positions == "sinusoid")
  return False


_TRANSFORMS = {None: lambda a: a, "dense": lambda a: a.T, "conv": lambda a: a.transpose(2, 3, 1, 0),
               "conv_transpose": lambda a: a.transpose(2, 3, 0, 1)}


def convert_state_dict(state: Mapping[str, np.ndarray], model: nn.Module) -> dict:
  """Maps an official state_dict onto `model`'s variables, checking every key and shape."""
  rules = mapping(model)
  known = {rule[0] for rule in rules}
  unknown = sorted(k for k in state if k not in known and not _ignored(k, model))
  missing = sorted(known - set(state))
  if unknown or missing:
    raise ConversionError(f"state_dict does not match {type(model).__name__}: "
                          f"unknown keys {unknown[:8]}{'...' if len(unknown) > 8 else ''}, "
                          f"missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}")
  expected = traverse_util.flatten_dict(jax.tree.map(lambda s: s.shape, _abstract_variables(model)), sep="/")
  flat = {}
  for key, collection, path, transform in rules:
    value = np.asarray(_TRANSFORMS[transform](np.asarray(state[key], np.float32)))
    want = expected.get(f"{collection}/{path}")
    if want is None:
      raise ConversionError(f"{key}: fmjax {type(model).__name__} has no variable {collection}/{path}")
    if tuple(value.shape) != tuple(want):
      raise ConversionError(f"{key}: shape {tuple(state[key].shape)} maps to {tuple(value.shape)},"
                            f" but {collection}/{path} needs {tuple(want)}")
    flat[f"{collection}/{path}"] = value
  unfilled = sorted(set(expected) - set(flat))
  if unfilled:
    raise ConversionError(f"no official key fills {unfilled[:8]}")
  return traverse_util.unflatten_dict(flat, sep="/")


def _abstract_variables(model: nn.Module):
  inputs = dict(zip(model.inputs, example_inputs(model, batch=1)))
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **inputs))


def example_inputs(model: nn.Module, batch: int) -> tuple[np.ndarray, ...]:
  """Zero inputs of the right shapes for `model`, one per name in `model.inputs` and in that order."""
  return tuple(np.zeros((batch, *model.example_shape(name)), np.float32) for name in model.inputs)


def load_state_dict(path: str) -> tuple[dict[str, np.ndarray], tuple[str, dict] | None]:
  """Reads a `.npz` (state_dict/<key> + optional config_json) or a `.pth` (needs torch)."""
  if not os.path.exists(path):
    raise ConversionError(f"{path}: no such file")
  if path.endswith(".npz"):
    with np.load(path) as archive:
      state = {k[len("state_dict/"):]: archive[k] for k in archive.files if k.startswith("state_dict/")}
      config = json.loads(str(archive["config_json"])) if "config_json" in archive.files else None
    if not state:
      raise ConversionError(f"{path}: no state_dict/<key> arrays in this .npz")
    return state, ((config["class"], config["kwargs"]) if config else None)
  try:
    import torch  # optional extra, only for .pth
  except ImportError:
    raise ConversionError(f"{path}: reading .pth needs PyTorch: pip install 'fmjax[torch]'") from None
  loaded = torch.load(path, map_location="cpu", weights_only=True)
  loaded = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
  if not isinstance(loaded, Mapping):
    raise ConversionError(f"{path}: expected a state_dict (a mapping of tensors), got {type(loaded).__name__}")
  return {k: v.detach().cpu().numpy() for k, v in loaded.items()}, None


def convert(path: str, official_config: tuple[str, dict] | None = None, **overrides) -> tuple[nn.Module, dict]:
  """Model and variables from an official checkpoint file. `overrides` refine shape inference."""
  state, stored = load_state_dict(path)
  class_name, kwargs = official_config or stored or infer_official_config(state, **overrides)
  model = model_from_official(class_name, kwargs)
  try:
    return model, convert_state_dict(state, model)
  except ConversionError as error:
    raise ConversionError(f"{path}: {error}") from None


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    print("usage: python -m fmjax.convert.torch_fmformer IN.{pth,npz} OUT_DIR", file=sys.stderr)
    return 2
  from fmjax.convert import export
  try:
    model, variables = convert(argv[1])
    export.save(argv[2], model, variables)
  except Exception as error:
    line = exits.error_line(error, argv[2])
    if line is None:
      raise
    print(line, file=sys.stderr)
    return 1
  print(f"wrote {type(model).__name__} to {argv[2]}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
