"""Joining a multi-host run: jax.distributed with explicit coordinates, or automatically on TPU VMs."""

import glob
import os

import jax


def initialize(
  coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
  """Initialises jax.distributed once; returns whether this is a multi-process (or TPU) run.

  Explicit coordinates come from the arguments or JAXFORMER_COORDINATOR_ADDRESS,
  JAXFORMER_NUM_PROCESSES, JAXFORMER_PROCESS_ID. On a TPU VM (devices /dev/accel* or
  /dev/vfio) jax.distributed.initialize() finds its coordinates itself, and JAX's preemption
  service comes with it.
  """
  coordinator_address = coordinator_address or os.environ.get("JAXFORMER_COORDINATOR_ADDRESS")
  num_processes = num_processes or _int_env("JAXFORMER_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _int_env("JAXFORMER_PROCESS_ID")
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id")
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id)
    return True
  on_tpu_vm = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  if on_tpu_vm and os.environ.get("JAX_PLATFORMS", "") != "cpu":
    jax.distributed.initialize()
    return True
  return False


def _int_env(name: str) -> int | None:
  value = os.environ.get(name)
  return int(value) if value not in (None, "") else None
