"""Peak host memory of `jaxformer export` for a random codegen2_1b checkpoint.

    python benchmarks/export_memory.py --work_dir=/tmp/export_bench

Writes a random codegen2_1b parameter checkpoint (orbax, float32, 4.06 GB) as `jaxformer
import` would, exports it with the real CLI in a child process, and prints the child's peak RSS
next to the model's size. Needs about 13 GB of disk and 10 GB of memory.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--work_dir", required=True)
  parser.add_argument("--model_gin", default="models/codegen2_1b.gin")
  args = parser.parse_args()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax  # pylint: disable=import-outside-toplevel
  from jaxformer import checkpoint, config as config_lib  # pylint: disable=import-outside-toplevel
  from jaxformer.model import ModelConfig  # pylint: disable=import-outside-toplevel
  from jaxformer.plan import param_shapes  # pylint: disable=import-outside-toplevel

  shutil.rmtree(args.work_dir, ignore_errors=True)
  run = os.path.join(args.work_dir, "run")
  config_lib.parse_gin([args.model_gin], [])
  config = ModelConfig()
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (rng.standard_normal(s.shape, dtype=np.float32) * 0.02), param_shapes(config))
  model_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  largest = max(x.nbytes for x in jax.tree.leaves(params))
  manager = checkpoint.make_manager(run, checkpoint_period=1, async_save=False)
  checkpoint.save(manager, 0, {"params": params}, force=True)
  manager.wait_until_finished()
  manager.close()
  del params
  with open(os.path.join(run, "config.gin"), "w") as f:
    f.write(open(os.path.join(config_lib.REPO_GIN_DIR, args.model_gin)).read())
  exe = os.path.join(os.path.dirname(sys.executable), "jaxformer")
  start = time.perf_counter()
  subprocess.run([exe, "export", f"--model_dir={run}", f"--output={args.work_dir}/hf"], check=True)
  seconds = time.perf_counter() - start
  peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
  print(f"model {model_bytes / 2**30:.2f} GiB (float32), largest stacked leaf {largest / 2**30:.2f} GiB")
  print(f"jaxformer export: peak RSS {peak / 2**30:.2f} GiB, {seconds:.0f} s")


if __name__ == "__main__":
  main()
