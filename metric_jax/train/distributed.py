"""Multi-host setup: `jax.distributed.initialize` when a run is configured for several processes.

Call `initialize` before anything touches a JAX backend. Values come from the arguments, else from the environment
(`METRIC_JAX_COORDINATOR` = "host:port", `METRIC_JAX_NUM_PROCESSES`, `METRIC_JAX_PROCESS_ID`); with one process (the
default) nothing happens. On CPU, cross-process collectives use gloo. Each process then feeds its own contiguous slice of
the global batch (samplers' `process_index` / `process_count`), which `Trainer.shard_batch` assembles into global arrays
with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import os
from typing import Optional

import jax


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, local_device_count: Optional[int] = None) -> bool:
  """Initialises `jax.distributed` for multi-process runs; returns True when it did.

  Args:
    coordinator_address: "host:port" of process 0.
    num_processes, process_id: this run's process count and this process's index.
    local_device_count: CPU only, number of virtual CPU devices of this process (`jax_num_cpu_devices`).
  """
  if local_device_count:
    jax.config.update("jax_num_cpu_devices", int(local_device_count))
  coordinator_address = coordinator_address or os.environ.get("METRIC_JAX_COORDINATOR") or None
  num_processes = int(num_processes or os.environ.get("METRIC_JAX_NUM_PROCESSES", 1))
  if process_id is None:
    process_id = int(os.environ.get("METRIC_JAX_PROCESS_ID", 0))
  if num_processes <= 1:
    return False
  if not coordinator_address:
    raise ValueError("`coordinator_address` (or $METRIC_JAX_COORDINATOR) is required when `num_processes` > 1.")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"`process_id` must lie in [0, {num_processes}), got {process_id}.")
  platforms = os.environ.get("JAX_PLATFORMS", "") or jax.config.jax_platforms or ""
  if platforms in ("", "cpu") or platforms.startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  return True
