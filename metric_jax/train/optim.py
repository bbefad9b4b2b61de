"""Optimizers with parameter groups (S1's recipe): new layers at a multiplied learning rate, backbone frozen for the first
steps, frozen BatchNorm affine parameters, learnable loss parameters (S2's alpha) trained jointly.

The trainable pytree is `{"model": <pure dict of the model's nnx.Param values>, "loss": <dict of loss parameters>}`.
`param_labels` assigns each leaf one of the groups

  backbone  model parameters outside the new layers: learning rate `lr(t) * [t >= freeze_backbone_steps]`
  new       model parameters under a top-level attribute in `new_layer_prefixes` (embedding / classifier heads):
            learning rate `new_layer_lr_multiplier * lr(t)` (10x in S1)
  frozen    BatchNorm scale/bias when `frozen_bn` is set: no update at all
  loss      learnable loss parameters: learning rate `loss_lr_multiplier * lr(t)`

and `make_optimizer` builds one `optax.multi_transform` over them.

References:
  (S1) General pair-based weighting loss: frozen BatchNorm, backbone frozen for the first epochs, 10x learning rate on new
  layers. (S2) DML-DA: per-class target densities alpha_c learned with the network.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

GROUPS = ("backbone", "new", "frozen", "loss")
_BN_NAMES = ("bn", "_bn")


def _key_name(k):
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return getattr(k, attr)
  return k


def _is_batchnorm_path(names) -> bool:
  # BatchNorm modules are attributes named `bn*` or `*_bn` (metric_jax.models.resnet); their params are scale/bias.
  if len(names) < 2 or names[-1] not in ("scale", "bias"):
    return False
  owner = str(names[-2])
  return owner.startswith("bn") or owner.endswith("_bn")


def param_labels(trainable, *, new_layer_prefixes: Sequence[str] = ("heads",), frozen_bn: bool = False):
  """Pytree of group names (see module docstring) with the structure of `trainable`."""

  def label(path, _):
    names = [_key_name(k) for k in path]
    if names[0] == "loss":
      return "loss"
    if frozen_bn and _is_batchnorm_path(names):
      return "frozen"
    if len(names) > 1 and names[1] in tuple(new_layer_prefixes):
      return "new"
    return "backbone"

  return jax.tree_util.tree_map_with_path(label, trainable)


def make_schedule(learning_rate: float, *, schedule: str = "constant", total_steps: int = 0,
                  warmup_steps: int = 0) -> Callable:
  """`constant`, or `cosine` decay to 0 over `total_steps`, both with an optional linear warmup."""
  if schedule == "constant":
    main = optax.constant_schedule(learning_rate)
  elif schedule == "cosine":
    main = optax.cosine_decay_schedule(learning_rate, max(1, total_steps - warmup_steps))
  else:
    raise ValueError(f"`schedule` must be 'constant' or 'cosine', got {schedule!r}.")
  if warmup_steps > 0:
    return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps), main], [warmup_steps])
  return main


def _base(name: str, lr, *, momentum: float, weight_decay: float):
  if name == "sgd":
    tx = optax.sgd(lr, momentum=momentum or None)
    return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx
  if name == "adam":
    tx = optax.adam(lr)
    return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx
  if name == "adamw":
    return optax.adamw(lr, weight_decay=weight_decay)
  raise ValueError(f"`optimizer` must be 'sgd', 'adam' or 'adamw', got {name!r}.")


def make_optimizer(trainable, *, optimizer: str = "adam", learning_rate: float = 1e-3, schedule: str = "constant",
                   total_steps: int = 0, warmup_steps: int = 0, momentum: float = 0.9, weight_decay: float = 0.0,
                   new_layer_lr_multiplier: float = 1.0, freeze_backbone_steps: int = 0,
                   loss_lr_multiplier: float = 1.0, frozen_bn: bool = False,
                   new_layer_prefixes: Sequence[str] = ("heads",)) -> optax.GradientTransformation:
  """One optax transformation over `trainable = {"model": ..., "loss": ...}` with the groups of `param_labels`.

  Args:
    optimizer: `sgd` (with `momentum`), `adam` or `adamw`; `weight_decay` is L2 added to the gradient for sgd/adam and
      decoupled for adamw.
    learning_rate, schedule, total_steps, warmup_steps: the base schedule lr(t) (see `make_schedule`).
    new_layer_lr_multiplier: learning-rate factor of the new layers (S1: 10).
    freeze_backbone_steps: backbone learning rate is 0 for steps t < this (S1: the first epochs).
    loss_lr_multiplier: learning-rate factor of the learnable loss parameters.
    frozen_bn: BatchNorm scale/bias get no update (pair it with BatchNorm in inference mode in the step).
  """
  lr = make_schedule(learning_rate, schedule=schedule, total_steps=total_steps, warmup_steps=warmup_steps)
  _checks_nonneg(freeze_backbone_steps, "freeze_backbone_steps")

  def backbone_lr(count):
    return jnp.where(count >= freeze_backbone_steps, lr(count), 0.0)

  kw = dict(momentum=momentum, weight_decay=weight_decay)
  transforms = {
      "backbone": _base(optimizer, backbone_lr if freeze_backbone_steps else lr, **kw),
      "new": _base(optimizer, lambda count: new_layer_lr_multiplier * lr(count), **kw),
      "frozen": optax.set_to_zero(),
      "loss": _base(optimizer, lambda count: loss_lr_multiplier * lr(count), momentum=momentum, weight_decay=0.0),
  }
  labels = param_labels(trainable, new_layer_prefixes=new_layer_prefixes, frozen_bn=frozen_bn)
  return optax.multi_transform(transforms, labels)


def _checks_nonneg(value, name):
  if value < 0:
    raise ValueError(f"`{name}` must be non-negative, got {value}.")
