"""Paths that are local or remote (gs://, as MODEL_DIR is on TPU pods).

Local paths use Python's own file functions; remote ones tf.io.gfile, which reads and writes
Cloud Storage. orbax and tf.data's iterator checkpoints handle gs:// themselves.
"""

import builtins
import contextlib
import glob as globlib
import logging
import os
import shutil


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


def isdir(path) -> bool:
  return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def glob(pattern) -> list[str]:
  return _gfile().glob(pattern) if is_remote(pattern) else globlib.glob(pattern)


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


def remove(path) -> None:
  if is_remote(path):
    _gfile().remove(path)
  else:
    os.remove(path)


def rename(source, target) -> None:
  """Moves a file or folder (on Cloud Storage tf.io.gfile copies the objects, then deletes them)."""
  if is_remote(source):
    _gfile().rename(source, target, overwrite=False)
  else:
    os.rename(source, target)


def listdir(path) -> list[str]:
  return _gfile().listdir(path) if is_remote(path) else os.listdir(path)


def rmtree(path) -> None:
  if is_remote(path):
    _gfile().rmtree(path)
  else:
    shutil.rmtree(path, ignore_errors=True)


def check_replaceable(output_dir: str, overwrite: bool, flag: str = "--output_dir") -> str:
  """output_dir, resolved; FileExistsError when it holds files and overwrite is False."""
  output_dir = resolve(output_dir).rstrip("/")
  if exists(output_dir) and not isdir(output_dir):
    raise FileExistsError(f"{flag}={output_dir} is a file, not a folder; choose another path")
  if exists(output_dir) and listdir(output_dir) and not overwrite:
    raise FileExistsError(f"{flag}={output_dir} already holds files; pass --overwrite to replace them")
  return output_dir


@contextlib.contextmanager
def replaced_on_success(output_dir: str, overwrite: bool, flag: str = "--output_dir"):
  """Yields a temporary sibling folder to build an output in; it replaces output_dir only when the
  build succeeds, so a failed build (or one stopped half way) never damages an earlier output, and no
  stale file of an earlier build remains.

  Raises FileExistsError before anything is built when output_dir already holds files and overwrite
  is False (nothing an earlier run wrote is replaced unasked).
  """
  output_dir = check_replaceable(output_dir, overwrite, flag)
  partial = f"{output_dir}.partial-{os.getpid()}"
  stale = [p for p in glob(f"{output_dir}.partial-*") if p.rstrip("/") != partial]
  if stale:  # a build that was killed (or one still running): never read, never removed unasked
    logging.getLogger("jaxformer").warning(
      "%s: unfinished build folder(s) %s from a run that stopped or is still running; remove them when no "
      "such run is left",
      flag,
      stale,
    )
  if exists(partial):
    rmtree(partial)
  makedirs(partial)
  try:
    yield partial
  except BaseException:
    rmtree(partial)
    raise
  if exists(output_dir) and listdir(output_dir) and not overwrite:  # appeared while this one was building
    rmtree(partial)
    raise FileExistsError(f"{flag}={output_dir} was written by another process meanwhile; this build is dropped")
  if exists(output_dir):
    old = f"{output_dir}.old-{os.getpid()}"
    rename(output_dir, old)
    rename(partial, output_dir)
    rmtree(old)
  else:
    rename(partial, output_dir)
