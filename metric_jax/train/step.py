"""Train state and the data-parallel (SPMD) train step.

The step is one pure function `(state, batch) -> (state, metrics)` written with `jax.shard_map` over a 1-D device mesh
whose axis is named `"batch"`. Every device holds a replica of the state and one shard `[b] = [G / n]` of the global batch
`[G]`:

  1. it embeds its shard (BatchNorm statistics are `pmean`-averaged over the axis: synchronised BatchNorm);
  2. calls the objective on its LOCAL outputs, labels and validity mask with `axis_name="batch"`: a registry loss then
     gathers the keys itself and builds only its `[b, G]` rows (queries = local examples, keys = the global batch), and
     combines every global statistic over the axis (`metric_jax.losses._shard`), so every device gets the global loss L
     while holding `G * G / n` of the pairwise matrix (memory and FLOPs of the loss fall as 1 / n). An objective that
     does not take `axis_name` (a plain `fn(outputs, labels, valid, ...)`) gets the `all_gather`ed global batch instead and
     computes the whole loss on every device, as before;
  3. differentiates L / n with respect to its parameters (`shard_map` runs with `check_vma=False`, where every collective
     transposes to a sum over the devices: the n devices' cotangents 1 / n add up to exactly dL/d(local rows));
  4. `psum`s the parameter gradients (= dL/dparams of the whole batch) and applies the same optimizer update everywhere.

One step on n devices therefore equals one step on one device with the concatenated batch, to float rounding.

Cross-batch memory (Wang et al. 2020, "Cross-Batch Memory for Embedding Learning"): with `memory_size=K > 0` the state
holds a FIFO ring buffer of the last K global-batch embeddings, labels and validity flags (static shapes, all invalid at
the start, replicated on every device). From step `memory_start_step` on, the objective's loss gets it as extra keys
(`memory=`, under stop-gradient; queries are still the batch); after each step the gathered global batch (the embeddings
of this step's forward pass) is written into the buffer in order, overwriting the oldest entries. The buffer is part of
the checkpointed state, so a resumed run continues with exactly the buffer it had.

Models are Flax NNX modules crossed into the pure function with `nnx.split` / `nnx.merge`: the graph definition is static,
the state holds pure dicts of arrays (`params`: nnx.Param values; `model_state`: the rest, e.g. BatchNorm statistics).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from metric_jax.train.objectives import takes_keyword

AXIS = "batch"


@dataclasses.dataclass(frozen=True)
class TrainState:
  """Everything a run needs to continue exactly: step, model parameters and statistics, optimizer state, learnable loss
  parameters (S2's alpha), fixed loss constants (S2's D0), the RNG key (raw uint32 `[2]`) and the cross-batch memory
  (`{"embeddings": [K, D], "labels": [K], "valid": [K], "next": []}`, or `{}` without memory).

  A pytree with the fields as attribute keys; the memory is left out of the tree when it is empty, so a state without
  memory has exactly the structure (and the checkpoints) of the states written before the memory existed.
  """
  step: jax.Array
  params: Dict[str, Any]
  model_state: Dict[str, Any]
  opt_state: Any
  loss_params: Dict[str, Any]
  loss_consts: Dict[str, Any]
  rng: jax.Array
  memory: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def trainable(self):
    return {"model": self.params, "loss": self.loss_params}

  def replace(self, **changes) -> "TrainState":
    return dataclasses.replace(self, **changes)


_STATE_FIELDS = ("step", "params", "model_state", "opt_state", "loss_params", "loss_consts", "rng")


def _flatten_with_keys(state: TrainState):
  names = _STATE_FIELDS + (("memory",) if state.memory else ())
  return [(jax.tree_util.GetAttrKey(name), getattr(state, name)) for name in names], bool(state.memory)


def _flatten(state: TrainState):
  children, has_memory = _flatten_with_keys(state)
  return [child for _, child in children], has_memory


def _unflatten(has_memory, children):
  children = list(children)
  memory = children.pop() if has_memory else {}
  return TrainState(*children, memory=memory)


jax.tree_util.register_pytree_with_keys(TrainState, _flatten_with_keys, _unflatten, _flatten)


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
    memory_size: K, the number of past global-batch embeddings kept as extra keys of the loss (cross-batch memory;
      0 turns it off). Needs an objective that takes `memory=` (`metric_objective` with a pair-based registry loss)
      and integer class-id labels.
    memory_start_step: the first step whose loss uses the memory (the buffer is filled from step 0 on).
    memory_dim: the embedding dimension D of the buffer; default `model.embedding_dim`.
  """

  def __init__(self, model: nnx.Module, objective: Callable, optimizer: optax.GradientTransformation, *,
               mesh: Optional[Mesh] = None, frozen_bn: bool = False, memory_size: int = 0,
               memory_start_step: int = 0, memory_dim: Optional[int] = None):
    self.graphdef, self._params0, self._model_state0 = split_model(model)
    self.objective = objective
    self.optimizer = optimizer
    self.mesh = make_mesh() if mesh is None else mesh
    if self.mesh.axis_names != (AXIS,):
      raise ValueError(f"`mesh` must be 1-D with axis name {AXIS!r}, got axes {self.mesh.axis_names}.")
    self.num_devices = self.mesh.devices.size
    self.frozen_bn = frozen_bn
    self.sharded_objective = takes_keyword(objective, "axis_name")
    for value, name in ((memory_size, "memory_size"), (memory_start_step, "memory_start_step")):
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative int, got {value!r}.")
    self.memory_size = memory_size
    self.memory_start_step = memory_start_step
    self.memory_dim = None
    if memory_size:
      if not getattr(objective, "takes_memory", takes_keyword(objective, "memory")):
        raise ValueError("`memory_size` > 0 needs an objective that takes `memory=` (e.g. `metric_objective` with a "
                         "pair-based registry loss); this objective does not.")
      memory_dim = getattr(model, "embedding_dim", None) if memory_dim is None else memory_dim
      if isinstance(memory_dim, bool) or not isinstance(memory_dim, int) or memory_dim < 1:
        raise ValueError(f"`memory_dim` must be a positive int (the embedding dimension; the model has no "
                         f"`embedding_dim`), got {memory_dim!r}.")
      self.memory_dim = memory_dim
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
                       rng=jax.random.PRNGKey(seed), memory=self.init_memory())
    return self.replicate(state)

  def init_memory(self) -> Dict[str, Any]:
    """The empty cross-batch memory: `K` invalid slots (`{}` when `memory_size` is 0)."""
    if not self.memory_size:
      return {}
    k = self.memory_size
    return {"embeddings": np.zeros((k, self.memory_dim), np.float32), "labels": np.zeros((k,), np.int32),
            "valid": np.zeros((k,), bool), "next": np.zeros((), np.int32)}

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
    labels = batch["label"]
    valid = batch["valid"] if "valid" in batch else jnp.ones(labels.shape[:1], bool)
    extra = {}
    if self.memory_size:   # the buffer's entries count from `memory_start_step` on
      in_use = state.step >= self.memory_start_step
      extra["memory"] = (state.memory["embeddings"], state.memory["labels"], state.memory["valid"] & in_use)

    def loss_fn(trainable):
      model = nnx.merge(self.graphdef, trainable["model"], state.model_state)
      local = model(batch["image"], train=not self.frozen_bn)
      if self.sharded_objective:   # local rows; the losses gather their keys and combine over the axis
        loss, metrics = self.objective(model, local, labels, valid, trainable["loss"], state.loss_consts,
                                       axis_name=AXIS, **extra)
      else:                        # the whole global batch on every device
        loss, metrics = self.objective(model, jax.tree.map(gather, local), gather(labels), gather(valid),
                                       trainable["loss"], state.loss_consts, **extra)
      _, _, new_model_state = split_model(model)
      return loss / n, (loss, metrics, new_model_state, local.get("embedding"))

    trainable = state.trainable()
    grads, (loss, metrics, new_model_state, embeddings) = jax.grad(loss_fn, has_aux=True)(trainable)
    grads = jax.lax.psum(grads, AXIS)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    rng, _ = jax.random.split(state.rng)
    memory = state.memory
    if self.memory_size:
      memory = self._write_memory(memory, gather(jax.lax.stop_gradient(embeddings)), gather(labels), gather(valid))
      metrics = dict(metrics, memory_used=jnp.sum(extra["memory"][2].astype(jnp.int32)))
    new_state = state.replace(step=state.step + 1, params=trainable["model"], model_state=new_model_state,
                              opt_state=opt_state, loss_params=trainable["loss"], rng=rng, memory=memory)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads["model"]),
                   num_valid=jax.lax.psum(jnp.sum(valid.astype(jnp.int32)), AXIS))
    return new_state, metrics

  def _write_memory(self, memory, embeddings, labels, valid):
    """The FIFO after writing the global batch `[G, ...]` in order at `next` (mod K), oldest entries overwritten.

    With `G > K` only the batch's last K rows fit (they are the K most recent). `next` advances by G (mod K).
    """
    k, g = self.memory_size, embeddings.shape[0]
    if labels.ndim != 1:
      raise ValueError(f"the cross-batch memory holds integer class ids [G]; the batch's labels have shape "
                       f"{labels.shape}.")
    keep = min(g, k)
    slots = (memory["next"] + (g - keep) + jnp.arange(keep)) % k
    return {"embeddings": memory["embeddings"].at[slots].set(embeddings[g - keep:].astype(jnp.float32)),
            "labels": memory["labels"].at[slots].set(labels[g - keep:].astype(jnp.int32)),
            "valid": memory["valid"].at[slots].set(valid[g - keep:]),
            "next": ((memory["next"] + g) % k).astype(jnp.int32)}

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
