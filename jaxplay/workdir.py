"""Run directories on a local disk or in a bucket (`gs://...`), read and written with etils.epath.

A `gs://` path needs `gcsfs` installed (epath reaches buckets through fsspec). Bucket objects cannot
be appended to, so `append_text` rewrites the whole file there; locally it appends.
"""

from __future__ import annotations

import os

from etils import epath

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """True for URIs such as gs://bucket/run, False for local paths."""
  return "://" in os.fspath(path)


def absolute(path: PathLike) -> str:
  """The path as a string, made absolute when local (a URI is absolute already)."""
  return os.fspath(path) if is_remote(path) else os.path.abspath(path)


def append_text(path: PathLike, text: str) -> None:
  """Appends `text` to a file (created if missing)."""
  path = epath.Path(path)
  if not is_remote(path):
    with path.open("a") as f:
      f.write(text)
    return
  path.write_text((path.read_text() if path.exists() else "") + text)
