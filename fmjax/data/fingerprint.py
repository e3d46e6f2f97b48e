"""What names a root's prepared copy: a fingerprint of the files a preparation reads.

    fingerprint.of(root)             # 'stat': the root's folder name and a hash of its path, files' sizes and times
    fingerprint.of(root, "content")  # a hash of the files' names and bytes: a root changed in place without
                                     # either (a copy made with `cp -p`) gets a new name; a copy elsewhere, the same

`fmjax.data.tfds_fmf` names each root's TFDS config by it, so a root whose files changed is prepared
again under a new name instead of reusing stale records (`config.data.fingerprint`, `launch/data.py
prepare --fingerprint`).
"""

from __future__ import annotations

import hashlib
import os

from fmjax.runtime import console, errors

KINDS = ("stat", "content")  # what a root's name hashes: its files' sizes and times, or their bytes
_HASH_CHUNK = 1 << 20  # bytes read at a time by the content fingerprint
_HASH_BAR_BYTES = 1 << 30  # roots above this many bytes show a bar while their content is hashed


def _files(root: str) -> list[tuple[str, str]]:
  """(name relative to the root, path) of every file a preparation reads, in a fixed order."""
  out = []
  for sub in ("videos", "currents", "timestamps", "events", "truth", ""):
    folder = os.path.join(root, sub)
    if os.path.isdir(folder):
      out += [(f"{sub}/{name}", os.path.join(folder, name)) for name in sorted(os.listdir(folder))
              if os.path.isfile(os.path.join(folder, name))]
  return out


def check(kind: str) -> str:
  """`kind` where it is one of `KINDS`; a ConfigError naming both otherwise."""
  if kind not in KINDS:
    raise errors.ConfigError(f"fingerprint {kind!r} is unknown (config.data.fingerprint, launch/data.py "
                             "--fingerprint): 'stat' names a root by its files' sizes and times, 'content' by "
                             "a hash of their bytes")
  return kind


def of(root: str, kind: str = "stat") -> str:
  """Config name of a root: its folder name plus a hash of its path and its files' sizes and times
  ('stat'), or of its files' names and bytes ('content': read whole, with a bar for large roots; a copy
  of the root elsewhere has the same name). The two kinds name the same root differently."""
  root = os.path.abspath(root)
  check(kind)
  listed = _files(root)
  if kind == "stat":
    digest = hashlib.sha1(root.encode())
    for name, path in listed:
      st = os.stat(path)
      digest.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
  else:
    digest = hashlib.sha1(b"content;")
    sizes = [os.path.getsize(path) for _, path in listed]
    chunks = sum(-(-size // _HASH_CHUNK) for size in sizes)
    large = sum(sizes) > _HASH_BAR_BYTES
    bar = console.bar(total=chunks, phase=f"fingerprinting {root}", unit="MiB") if large else None
    for (name, path), size in zip(listed, sizes):
      digest.update(f"{name}:{size};".encode())
      with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
          digest.update(chunk)
          if bar is not None:
            bar.update(1)
    if bar is not None:
      bar.close()
  base = "".join(c if c.isalnum() else "_" for c in os.path.basename(root.rstrip(os.sep)).lower()) or "root"
  return f"{base}_{'content_' if kind == 'content' else ''}{digest.hexdigest()[:10]}"
