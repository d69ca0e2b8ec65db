"""TensorFlow imported quietly, the one way every process does it (the CLI and Beam's worker processes):
its start-up prints CUDA and absl lines to file descriptor 2 that no log level hides, and it must not
claim the GPUs JAX owns (TF only reads data here)."""

import os
import sys


def import_tensorflow():
  """TensorFlow, imported with fd 2 silenced the first time, and with no GPU visible to it."""
  if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
      os.dup2(devnull, 2)
      import tensorflow as tf

      tf.config.set_visible_devices([], "GPU")
    finally:
      os.dup2(saved, 2)
      os.close(devnull)
      os.close(saved)
  import tensorflow as tf

  return tf
