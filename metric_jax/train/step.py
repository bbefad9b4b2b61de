"""Train state and the data-parallel (SPMD) train step.

The step is one pure function `(state, batch) -> (state, metrics)` written with `jax.shard_map` over a 1-D device mesh
whose axis is named `"batch"`. Every device holds a replica of the state and one shard `[G / n]` of the global batch `[G]`:

  1. it embeds its shard (BatchNorm statistics are `pmean`-averaged over the axis: synchronised BatchNorm);
  2. `all_gather`s the model outputs, labels and validity masks, so the objective sees the GLOBAL batch and every device
     computes the same global loss L (pairwise losses get every cross-device pair);
  3. differentiates L / n with respect to its parameters: the gradient flows back through the `all_gather`, whose transpose
     (`psum_scatter`) sums the n identical contributions into dL/d(local embeddings), then through the local forward pass;
  4. `psum`s the parameter gradients (= dL/dparams of the whole batch) and applies the same optimizer update everywhere.

One step on n devices therefore equals one step on one device with the concatenated batch, to float rounding.

Models are Flax NNX modules crossed into the pure function with `nnx.split` / `nnx.merge`: the graph definition is static,
the state holds pure dicts of arrays (`params`: nnx.Param values; `model_state`: the rest, e.g. BatchNorm statistics).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "batch"


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly: step, model parameters and statistics, optimizer state, learnable loss
  parameters (S2's alpha), fixed loss constants (S2's D0) and the RNG key (raw uint32 `[2]`)."""
  step: jax.Array
  params: Dict[str, Any]
  model_state: Dict[str, Any]
  opt_state: Any
  loss_params: Dict[str, Any]
  loss_consts: Dict[str, Any]
  rng: jax.Array

  def trainable(self):
    return {"model": self.params, "loss": self.loss_params}


def make_mesh(devices=None) -> Mesh:
  """1-D mesh with axis `"batch"` over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.array(devices), (AXIS,))


def split_model(model: nnx.Module):
  """`(graphdef, params pure dict, other-variables pure dict)`."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, params.to_pure_dict(), rest.to_pure_dict()


class Trainer:
  """Holds the static parts of training (graph definition, objective, optimizer, mesh) and the jitted functions.

  Args:
    model: an nnx module called as `model(images, train=...) -> dict` of per-example arrays (`embedding`, ...).
    objective: see `metric_jax.train.objectives`.
    optimizer: an optax transformation over `{"model": params, "loss": loss_params}` (`metric_jax.train.optim`).
    mesh: 1-D mesh with axis `"batch"`; default all devices.
    frozen_bn: run BatchNorm in inference mode during training (running statistics, never updated).
  """

  def __init__(self, model: nnx.Module, objective: Callable, optimizer: optax.GradientTransformation, *,
               mesh: Optional[Mesh] = None, frozen_bn: bool = False):
    self.graphdef, self._params0, self._model_state0 = split_model(model)
    self.objective = objective
    self.optimizer = optimizer
    self.mesh = make_mesh() if mesh is None else mesh
    if self.mesh.axis_names != (AXIS,):
      raise ValueError(f"`mesh` must be 1-D with axis name {AXIS!r}, got axes {self.mesh.axis_names}.")
    self.num_devices = self.mesh.devices.size
    self.frozen_bn = frozen_bn
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P(AXIS))
    self.train_step = jax.jit(jax.shard_map(
        self._local_step, mesh=self.mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()), check_vma=False))
    self._apply = jax.jit(self._apply_eval, static_argnames=("key",))

  # -- state ---------------------------------------------------------------------------------------------------------
  def init_state(self, *, seed: int = 0, loss_params=None, loss_consts=None) -> TrainState:
    """Replicated initial state from the model given to the constructor (identical on every process)."""
    loss_params = jax.tree.map(jnp.asarray, dict(loss_params or {}))  # may nest: {"alpha": [C], "base": {...}}
    loss_consts = jax.tree.map(jnp.asarray, dict(loss_consts or {}))
    trainable = {"model": self._params0, "loss": loss_params}
    state = TrainState(step=jnp.zeros((), jnp.int32), params=self._params0, model_state=self._model_state0,
                       opt_state=self.optimizer.init(trainable), loss_params=loss_params, loss_consts=loss_consts,
                       rng=jax.random.PRNGKey(seed))
    return self.replicate(state)

  def replicate(self, tree):
    """Places a host-identical pytree on every device of the mesh (works across processes)."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x), np.shape(x)), tree)

  def shard_batch(self, batch: Dict[str, np.ndarray]) -> Dict[str, jax.Array]:
    """This process's share of the global batch (numpy `[b, ...]`) -> global arrays `[G, ...]` split over the mesh."""
    out = {}
    for key, value in batch.items():
      value = np.asarray(value)
      global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
      if global_shape[0] % self.num_devices:
        raise ValueError(f"global batch size {global_shape[0]} (`{key}`) is not divisible by the {self.num_devices} "
                         f"devices of the mesh.")
      out[key] = jax.make_array_from_process_local_data(self.batch_sharding, value, global_shape)
    return out

  # -- the SPMD step -------------------------------------------------------------------------------------------------
  def _local_step(self, state: TrainState, batch):
    n = jax.lax.psum(1, AXIS)
    gather = functools.partial(jax.lax.all_gather, axis_name=AXIS, tiled=True)
    labels = gather(batch["label"])
    valid = gather(batch["valid"]) if "valid" in batch else jnp.ones(labels.shape, bool)

    def loss_fn(trainable):
      model = nnx.merge(self.graphdef, trainable["model"], state.model_state)
      local = model(batch["image"], train=not self.frozen_bn)
      outputs = jax.tree.map(gather, local)
      loss, metrics = self.objective(model, outputs, labels, valid, trainable["loss"], state.loss_consts)
      _, _, new_model_state = split_model(model)
      return loss / n, (loss, metrics, new_model_state)

    trainable = state.trainable()
    grads, (loss, metrics, new_model_state) = jax.grad(loss_fn, has_aux=True)(trainable)
    grads = jax.lax.psum(grads, AXIS)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    rng, _ = jax.random.split(state.rng)
    new_state = state.replace(step=state.step + 1, params=trainable["model"], model_state=new_model_state,
                              opt_state=opt_state, loss_params=trainable["loss"], rng=rng)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads["model"]),
                   num_valid=jnp.sum(valid.astype(jnp.int32)))
    return new_state, metrics

  # -- evaluation ----------------------------------------------------------------------------------------------------
  def _apply_eval(self, params, model_state, images, key):
    model = nnx.merge(self.graphdef, params, model_state)
    return model(images, train=False)[key]

  @staticmethod
  def local_copy(tree):
    """One device's replica of a replicated pytree (usable on any process)."""
    return jax.tree.map(lambda x: x.addressable_shards[0].data if isinstance(x, jax.Array) else x, tree)

  def embed_fn(self, state: TrainState, key: str = "embedding") -> Callable[[jax.Array], jax.Array]:
    """`images float32 [b, H, W, C] -> [b, D]` with the model in inference mode (BatchNorm running statistics).

    A pure JAX function (jittable, so `metric_jax.evaluation.extract_embeddings(trainer.embed_fn(state), images)`
    works); wrap the result in `np.asarray` for numpy."""
    params, model_state = self.local_copy(state.params), self.local_copy(state.model_state)
    return lambda images: self._apply(params, model_state, jnp.asarray(images), key)

  def model(self, state: TrainState) -> nnx.Module:
    """The nnx model with the state's parameters (a local copy)."""
    return nnx.merge(self.graphdef, self.local_copy(state.params), self.local_copy(state.model_state))
