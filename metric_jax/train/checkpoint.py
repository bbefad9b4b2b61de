"""Orbax checkpoints of the whole train state plus a small JSON record (sampler position, config, ...).

The train state (`TrainState`: model parameters and statistics, optimizer state, learnable loss parameters, loss
constants, RNG key, step) is one pytree saved with `StandardSave`; the sampler position is the step of the next batch,
which is all a `(seed, step)`-pure sampler needs. Restoring into an abstract target that carries the replicated
sharding puts the arrays straight back on the mesh (also across processes). Saves are asynchronous; a checkpoint becomes
visible only once complete (orbax writes to a temporary directory and renames it), so a run killed mid-save resumes from
the previous one.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """`CheckpointManager` keeping the last `max_to_keep` checkpoints under `directory`."""

  def __init__(self, directory: str, *, max_to_keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                           create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: Optional[dict] = None) -> None:
    self.manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         meta=ocp.args.JsonSave(dict(meta or {}))), force=True)

  def restore(self, target: Any, step: Optional[int] = None) -> Tuple[Any, dict]:
    """Restores `(state, meta)` of `step` (default the latest) into the structure and shardings of `target`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                  meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta or {})

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
