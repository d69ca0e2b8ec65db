"""Peak host memory of `jaxformer export` for a random codegen2_1b checkpoint.

    python benchmarks/export_memory.py --work_dir=/tmp/export_bench

A child process writes a random codegen2_1b parameter checkpoint (orbax, float32, 3.78 GiB) as
`jaxformer import` would; another child runs the real `jaxformer export`; this (small) parent
reads that child's own peak RSS with os.wait4 and prints it beside the model's size. (Measuring
from a large parent would count the pages a fork copies before exec.) Needs about 13 GB of disk.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time


def make_checkpoint(work_dir: str, model_gin: str):
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import numpy as np

  from jaxformer import checkpoint, models
  from jaxformer import config as config_lib
  from jaxformer.models import param_shapes

  run = os.path.join(work_dir, "run")
  config_lib.parse_gin([model_gin], [])
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape, dtype=np.float32) * 0.02, param_shapes(models.bound()))
  leaves = jax.tree.leaves(params)
  print(
    f"model {sum(x.nbytes for x in leaves) / 2**30:.2f} GiB (float32), largest stacked leaf "
    f"{max(x.nbytes for x in leaves) / 2**30:.2f} GiB",
    flush=True,
  )
  manager = checkpoint.make_manager(run, checkpoint_period=1, async_save=False)
  checkpoint.save(manager, 0, {"params": params}, force=True)
  manager.wait_until_finished()
  manager.close()
  shutil.copy(os.path.join(config_lib.GIN_DIR, model_gin), os.path.join(run, "config.gin"))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--work_dir", required=True)
  parser.add_argument("--model_gin", default="models/codegen2_1b.gin")
  parser.add_argument("--make_checkpoint", action="store_true", help="(internal) the first child's job")
  args = parser.parse_args()
  if args.make_checkpoint:
    make_checkpoint(args.work_dir, args.model_gin)
    return
  shutil.rmtree(args.work_dir, ignore_errors=True)
  subprocess.run(
    [sys.executable, __file__, "--make_checkpoint", f"--work_dir={args.work_dir}", f"--model_gin={args.model_gin}"],
    check=True,
  )
  exe = os.path.join(os.path.dirname(sys.executable), "jaxformer")
  start = time.perf_counter()
  child = subprocess.Popen([exe, "export", f"--model_dir={args.work_dir}/run", f"--output_dir={args.work_dir}/hf"])
  _, status, usage = os.wait4(child.pid, 0)
  child.returncode = os.waitstatus_to_exitcode(status)
  if child.returncode:
    sys.exit(f"jaxformer export failed ({child.returncode})")
  print(f"jaxformer export: peak RSS {usage.ru_maxrss / 2**20:.2f} GiB, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
