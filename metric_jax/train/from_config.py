"""A run's parts built from its experiment config: data, preprocessing, model, objective, optimizer, trainer.

The config is an `ml_collections.ConfigDict` of the layout of `experiments/configs/default.py` (or the same nested keys
in a plain dict, e.g. a run's saved `config.json`). Both `experiments/train.py` and `metric_jax.train.restore` build
through these functions, so a restored run has exactly the structure it was trained with.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np


class ConfigError(ValueError):
  """A config value that cannot be used (the message names the key)."""


class RunData(NamedTuple):
  """The splits of a run: `validation` is None unless the config asks for one (`config.validation`)."""
  train: Any
  validation: Any
  test: Any


def image_size(c) -> Optional[Tuple[int, int]]:
  """`(s, s)` when `config.image_size` > 0, else None (the dataset's own size)."""
  s = int(c.get("image_size", 0) or 0)
  if s < 0:
    raise ValueError(f"`config.image_size` must be >= 0 (0 = the dataset's size), got {s}.")
  return (s, s) if s else None


def load_data(c) -> RunData:
  """The run's splits: class-disjoint retrieval (with a validation part when `config.validation`) or S0 limited-data."""
  from metric_jax import data
  kw = dict(data_dir=c.data_dir or None, manual_dir=c.manual_dir or None, image_size=image_size(c))
  if c.split == "retrieval":
    if c.get("validation", False):
      return RunData(*data.retrieval_splits(c.dataset, protocol=c.protocol or None, **kw))
    train, test = data.retrieval_split(c.dataset, protocol=c.protocol or None, **kw)
    return RunData(train, None, test)
  if c.split == "limited":
    if c.get("validation", False):
      per_class = c.get("validation_per_class", 0)
      if not isinstance(per_class, int) or per_class <= 0:
        raise ConfigError("`config.validation_per_class` must be a positive int (images per class held out of the "
                          f"training pool) when `config.validation` is set with the limited split, got {per_class!r}.")
      return RunData(*data.limited_data_splits(c.dataset, c.samples_per_class, per_class, seed=c.seed, **kw))
    train, test = data.limited_data_split(c.dataset, c.samples_per_class, seed=c.seed, **kw)
    return RunData(train, None, test)
  raise ValueError(f"`config.split` must be 'retrieval' or 'limited', got {c.split!r}.")


RETRIEVAL_SELECTION = ("map@r", "r_precision", "precision@1")


def selection_metric(c) -> str:
  """The validation metric that picks a run's reported step (`config.selection_metric`), checked against what the
  validation part measures: retrieval metrics on held-out classes (`retrieval`), or the kNN classifier's accuracy on
  held-out images of the training classes (`limited`; also the softmax classifier W1 of a two-channel net)."""
  metric = c.get("selection_metric", "map@r")
  if c.split == "limited":
    allowed = ("knn_accuracy",) + (("softmax_accuracy",) if c.model.two_channel else ())
  else:
    allowed = RETRIEVAL_SELECTION + tuple(f"recall@{k}" for k in c.ks)
  if metric not in allowed:
    raise ConfigError(f"`config.selection_metric` must be one of {allowed} for the {c.split!r} split, got {metric!r}.")
  return metric


PREPROCESS_KINDS = ("float", "shift", "standardize", "flip", "lcn", "gcn_zca")


def fit_preprocessing(c, train_images) -> Dict[str, np.ndarray]:
  """The statistics the config's preprocessing fits on the training images (saved with the run for `restore`)."""
  from metric_jax.data import preprocessing as pp
  kind = c.preprocess.kind
  if kind not in PREPROCESS_KINDS:
    raise ValueError(f"`config.preprocess.kind` must be one of {PREPROCESS_KINDS}, got {kind!r}.")
  if kind in ("standardize", "flip"):
    mean, std = pp.channel_stats(train_images)
    return {"mean": np.asarray(mean, np.float32), "std": np.asarray(std, np.float32)}
  if kind == "gcn_zca":
    zca = pp.fit_zca(pp.global_contrast_normalize(pp.to_float(train_images)), eps=0.1)
    return {"zca_mean": zca.mean, "zca_matrix": zca.matrix}
  return {}


def make_transforms(c, stats: Dict[str, np.ndarray], image_shape):
  """`(train_transform, test_transform)` for `BatchLoader` / evaluation from the fitted `stats`.

  Kinds: `float` (scale to [0, 1]); `shift` (random translation by up to `preprocess.crop_padding` pixels, zero
  padding, for training); `standardize` (per-channel mean / std); `flip` (standardize + random horizontal flip);
  `lcn` (S0 SVHN: 28x28 centre crop + local contrast normalization); `gcn_zca` (S0 CIFAR-10: GCN + ZCA whitening).
  """
  from metric_jax.data import preprocessing as pp
  kind = c.preprocess.kind
  if kind == "float":
    t = pp.make_transform()
    return t, t
  if kind == "shift":
    return (pp.make_transform(random_crop_to=tuple(image_shape[:2]), crop_padding=c.preprocess.crop_padding),
            pp.make_transform())
  if kind == "standardize":
    t = pp.make_transform(mean=stats["mean"], std=stats["std"])
    return t, t
  if kind == "flip":
    return (pp.make_transform(flip=True, mean=stats["mean"], std=stats["std"]),
            pp.make_transform(mean=stats["mean"], std=stats["std"]))
  if kind == "lcn":
    t = pp.make_transform(center_crop_to=(28, 28), lcn=True)
    return t, t
  if kind == "gcn_zca":
    t = pp.make_transform(gcn=True, zca=pp.ZCA(stats["zca_mean"], stats["zca_matrix"]))
    return t, t
  raise ValueError(f"`config.preprocess.kind` must be one of {PREPROCESS_KINDS}, got {kind!r}.")


def _compute_dtype(name: str):
  """`config.model.dtype`: the backbone's computation dtype; parameters, optimizer state, heads and loss stay float32."""
  import jax.numpy as jnp
  if name not in ("float32", "bfloat16"):
    raise ConfigError(f"`config.model.dtype` must be 'float32' or 'bfloat16', got {name!r}.")
  return jnp.bfloat16 if name == "bfloat16" else None


def build_model(c, input_shape, num_classes: int):
  """The config's nnx network: an `Embedder` over a backbone, or S0's `TwoChannelNet`."""
  from flax import nnx
  from metric_jax import models
  m = c.model
  rngs = nnx.Rngs(c.seed)
  num_outputs = m.num_outputs or None
  dtype = _compute_dtype(m.get("dtype", "float32"))
  if m.backbone == "lenet":
    backbone = models.LeNet(input_shape, num_outputs, channels=tuple(m.lenet_channels), hidden=m.lenet_hidden,
                            kernel_size=m.lenet_kernel, padding=m.padding, dtype=dtype, rngs=rngs)
  elif m.backbone == "svhn":
    backbone = models.SVHNNet(input_shape, num_outputs or 10, dtype=dtype, rngs=rngs)
  elif m.backbone == "cifar":
    backbone = models.CifarNet(input_shape, num_outputs or 10, dtype=dtype, rngs=rngs)
  elif m.backbone == "resnet":
    backbone = models.SmallResNet(input_shape, widths=tuple(m.resnet_widths), blocks_per_stage=m.resnet_blocks,
                                  dtype=dtype, rngs=rngs)
  else:
    raise ValueError(f"`config.model.backbone` must be lenet | svhn | cifar | resnet, got {m.backbone!r}.")
  if m.two_channel:
    return models.TwoChannelNet(backbone, input_shape, num_classes, feature_layer=m.feature_layer or None,
                                classifier_layer=m.classifier_layer or None, rngs=rngs)
  return models.Embedder(backbone, input_shape, m.embedding_dim, layers=tuple(m.layers) or None,
                         normalize=m.normalize, rngs=rngs)


def loss_hparams(c) -> Dict[str, Any]:
  """`config.objective.loss_hparams` as a dict, checked against the chosen loss's keyword arguments.

  Raises:
    ValueError: a name the loss does not take (the message lists the names it does take).
  """
  o = c.objective
  hp = o.loss_hparams.to_dict() if hasattr(o.loss_hparams, "to_dict") else dict(o.loss_hparams or {})
  if o.kind != "metric":
    if hp:
      raise ConfigError(f"`config.objective.loss_hparams` is only used with objective kind 'metric', got {o.kind!r}.")
    return hp
  from metric_jax import losses
  fn = losses.get(o.loss)
  params = inspect.signature(fn).parameters
  takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
  valid = sorted(n for n, p in params.items()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("valid", "params", "axis_name",
                                                                              "block_size", "memory"))
  unknown = sorted(set(hp) - set(valid))
  if unknown and not takes_any:
    raise ConfigError(f"`config.objective.loss_hparams` names {', '.join(map(repr, unknown))}, not hyperparameters of "
                     f"loss {o.loss!r}; it takes: {', '.join(valid) or '(none)'}.")
  return hp


def build_objective(c):
  from metric_jax import train
  o = c.objective
  if o.kind == "metric":
    return train.metric_objective(o.loss, loss_hparams=loss_hparams(c),
                                  density_adaptivity_weight=o.density_adaptivity_weight,
                                  density_adaptivity_eta=o.density_adaptivity_eta,
                                  global_orthogonal_weight=o.global_orthogonal_weight,
                                  embedding_l2_weight=o.embedding_l2_weight,
                                  entropy_weight=o.get("entropy_weight", 0.0))
  loss_hparams(c)
  return train.pair_objective(o.kind, margin=o.pair_margin, b=o.pair_b, lam=o.pair_lambda)


def uses_density_adaptivity(c) -> bool:
  return c.objective.kind == "metric" and c.objective.density_adaptivity_weight > 0


def loss_params_template(c, num_classes: int, embedding_dim: int) -> Dict[str, Any]:
  """Learnable loss parameters of the config: S2's `alpha [C]` with density adaptivity, and the base loss's own
  parameters (proxies, class weights, centres) under `"base"` when the loss has any."""
  from metric_jax import train
  params = dict(train.init_loss_params(num_classes, density_adaptivity=uses_density_adaptivity(c)))
  if c.objective.kind == "metric":
    from metric_jax import losses
    if getattr(losses, "has_params", None) is not None and losses.has_params(c.objective.loss):
      import jax
      params["base"] = losses.init_params(c.objective.loss, jax.random.PRNGKey(c.seed), num_classes=num_classes,
                                          embedding_dim=embedding_dim, **loss_hparams(c))
  return params


def build_optimizer(c, trainable):
  from metric_jax import train
  o = c.optimizer
  return train.make_optimizer(
      trainable, optimizer=o.name, learning_rate=o.learning_rate, schedule=o.schedule, total_steps=c.num_steps,
      warmup_steps=o.warmup_steps, momentum=o.momentum, weight_decay=o.weight_decay,
      new_layer_lr_multiplier=o.new_layer_lr_multiplier, freeze_backbone_steps=o.freeze_backbone_steps,
      loss_lr_multiplier=o.loss_lr_multiplier, frozen_bn=o.frozen_bn)


def embedding_dim(model) -> int:
  return int(getattr(model, "embedding_dim", 0) or 0)


def memory_settings(c) -> Tuple[int, int]:
  """`(size, start_step)` of the config's cross-batch memory (`config.memory`; `(0, 0)` = off, also for configs saved
  before the section existed).

  Raises:
    ConfigError: naming the key, for a value that is not a non-negative int, or for a memory (`size` > 0) with an
      objective that cannot take one: the S0 pair objectives (`objective.kind` != 'metric') and the registry losses
      whose keys are class parameters (proxies, class weights, centres: the losses with learnable parameters).
  """
  m = c.get("memory", None) or {}
  values = []
  for key in ("size", "start_step"):
    value = m.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
      raise ConfigError(f"`config.memory.{key}` must be a non-negative int, got {value!r}.")
    values.append(int(value))
  size, start_step = values
  if size:
    kind, loss = c["objective"]["kind"], c["objective"]["loss"]
    if kind != "metric":
      raise ConfigError(f"`config.memory.size` = {size} needs `config.objective.kind` = 'metric' (a pair-based "
                        f"registry loss); the S0 pair objective {kind!r} takes no cross-batch memory. Set "
                        f"memory.size = 0.")
    from metric_jax import losses
    if losses.has_params(loss):
      raise ConfigError(f"`config.memory.size` = {size}: loss {loss!r} compares embeddings with its class parameters "
                        f"(proxies / class weights / centres), not with other embeddings, so it takes no cross-batch "
                        f"memory. Use a pair-based loss or memory.size = 0.")
  return size, start_step


def check_memory_labels(c, labels) -> None:
  """Raises `ConfigError` when the config has a cross-batch memory and the training labels are not class ids `[N]`
  (the memory stores one class id per embedding; multi-hot labels `[N, L]` are not supported)."""
  size, _ = memory_settings(c)
  shape = np.shape(labels)
  if size and len(shape) != 1:
    raise ConfigError(f"`config.memory.size` = {size} needs integer class-id labels [N]; the training labels have "
                      f"shape {shape} (multi-hot labels are not supported by the cross-batch memory).")


def build_trainer(c, input_shape, num_classes: int):
  """`(trainer, loss_params)`: the config's model, objective and optimizer in a `Trainer` (with the cross-batch memory
  of `config.memory`), and the initial learnable loss parameters (the optimizer is built over them, so the structure
  matches a checkpoint of the run)."""
  from metric_jax import train
  memory_size, memory_start_step = memory_settings(c)
  model = build_model(c, input_shape, num_classes)
  loss_params = loss_params_template(c, num_classes, embedding_dim(model))
  _, params, _ = train.split_model(model)
  optimizer = build_optimizer(c, {"model": params, "loss": loss_params})
  trainer = train.Trainer(model, build_objective(c), optimizer, frozen_bn=c.optimizer.frozen_bn,
                          memory_size=memory_size, memory_start_step=memory_start_step)
  return trainer, loss_params


__all__ = ["ConfigError", "RunData", "image_size", "load_data", "fit_preprocessing", "make_transforms", "build_model",
           "loss_hparams", "build_objective", "loss_params_template", "build_optimizer", "build_trainer",
           "uses_density_adaptivity", "memory_settings", "check_memory_labels", "PREPROCESS_KINDS"]
