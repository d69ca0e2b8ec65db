"""Paths that are local or remote (gs://, as MODEL_DIR is on TPU pods).

Local paths use Python's own file functions; remote ones tf.io.gfile, which reads and writes
Cloud Storage. orbax and tf.data's iterator checkpoints handle gs:// themselves.
"""

import builtins
import os


def is_remote(path) -> bool:
  return "://" in str(path)


def resolve(path) -> str:
  """~ and relative paths made absolute; remote paths unchanged (abspath would mangle gs://b into ./gs:/b)."""
  path = str(path)
  return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def _gfile():
  import tensorflow as tf

  return tf.io.gfile


def exists(path) -> bool:
  return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path) -> None:
  if is_remote(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def open(path, mode: str = "r"):
  return _gfile().GFile(path, mode) if is_remote(path) else builtins.open(path, mode)


def copy(source, target) -> None:
  _gfile().copy(source, target, overwrite=True)


def write(path, data, mode: str = "w") -> None:
  """Writes a whole file by writing PATH.tmp and renaming it over PATH: a reader never sees half a
  file, and an interrupted write leaves the old one."""
  makedirs(os.path.dirname(str(path)))
  with open(f"{path}.tmp", mode) as f:
    f.write(data)
  if is_remote(path):
    _gfile().rename(f"{path}.tmp", path, overwrite=True)
  else:
    os.replace(f"{path}.tmp", path)
