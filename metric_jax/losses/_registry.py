"""Name -> loss registry behind `metric_jax.losses.get`, and the learnable loss parameters behind `init_params`.

Every registered function has the convenience signature `fn(embeddings [B, D], labels, *, valid=None, **hparams)` and
returns a scalar. Pair-based losses build the pairwise matrix their loss expects and call the matrix form with the
batch as both queries and keys (self pairs excluded). Losses with learnable parameters (proxies, class weights,
centres) also take `params=`, the pytree that `init_params` creates.

Labels are integer class ids `[B]` or multi-hot `[B, L]` (see `metric_jax.labels`). The N-pair losses take class ids
only: their tuples need exactly one class per sample (one anchor and one positive per class, the other classes'
positives as negatives), so the registry refuses multi-hot labels for them with a clear error.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, Optional

import jax.numpy as jnp

from metric_jax import _checks

_LOSSES: Dict[str, Callable] = {}
_INITS: Dict[str, Callable] = {}
_NO_MULTI_HOT = set()
# Keyword arguments of every registry loss that are not hyperparameters: the padding mask, the learnable parameters and
# the scale arguments (DESIGN.md, "Scale").
NOT_HYPERPARAMETERS = ("valid", "params", "axis_name", "block_size", "memory")
# Registry losses that read class ids directly instead of through `metric_jax.labels` masks.
_CLASS_IDS_ONLY = frozenset({"npair_mc", "npair_ovo"})


def _class_ids_only(name: str, fn: Callable) -> Callable:
  @functools.wraps(fn)
  def wrapper(embeddings, labels, *args, **kwargs):
    if len(jnp.shape(labels)) == 2:
      raise ValueError(f"`labels` must be integer class ids [B] for {name!r}: its tuples take one anchor and one "
                       f"positive per class, which multi-hot labels {tuple(jnp.shape(labels))} do not define.")
    return fn(embeddings, labels, *args, **kwargs)

  return wrapper


def register(name: str, *, init: Optional[Callable] = None, multi_hot: bool = True):
  """Decorator registering an embedding-form loss under `name`.

  Args:
    name: the registry name.
    init: for a loss with learnable parameters, `init(key, *, num_classes, embedding_dim, dtype, **hparams) -> dict`
      creating them (`hparams` holds every keyword hyperparameter of the loss, defaults filled in); the loss then
      takes the dict as `params=`.
    multi_hot: whether the loss accepts multi-hot labels `[B, L]` (one that does not must refuse them itself with an
      error naming `labels`; this flag only answers `accepts_multi_hot`).
  """

  def decorator(fn):
    if name in _LOSSES:
      raise ValueError(f"loss {name!r} is registered twice.")
    _LOSSES[name] = _class_ids_only(name, fn) if name in _CLASS_IDS_ONLY else fn
    if init is not None:
      _INITS[name] = init
    if not multi_hot or name in _CLASS_IDS_ONLY:
      _NO_MULTI_HOT.add(name)
    return fn

  return decorator


def get(name: str) -> Callable:
  """Returns the loss `fn(embeddings, labels, *, valid=None, **hparams) -> scalar` registered as `name`.

  Losses with learnable parameters (see `has_params`) take them as `params=` too.
  """
  if name not in _LOSSES:
    raise ValueError(f"unknown loss name {name!r}; registered: {', '.join(sorted(_LOSSES))}.")
  return _LOSSES[name]


def names():
  """Sorted registered loss names."""
  return sorted(_LOSSES)


def has_params(name: str) -> bool:
  """Whether the loss `name` has learnable parameters (and so needs `params=` from `init_params`)."""
  get(name)
  return name in _INITS


def accepts_multi_hot(name: str) -> bool:
  """Whether the registry loss `name` accepts multi-hot labels `[B, L]` besides class ids `[B]`."""
  get(name)
  return name not in _NO_MULTI_HOT


def _hyperparameters(name: str) -> Dict[str, Any]:
  """The keyword hyperparameters of the loss `name` with their defaults (not `valid`, `params` or the scale arguments
  `axis_name`, `block_size`, `memory`)."""
  parameters = inspect.signature(get(name)).parameters.values()
  return {p.name: p.default for p in parameters
          if p.kind == p.KEYWORD_ONLY and p.name not in NOT_HYPERPARAMETERS}


def init_params(name: str, key, *, num_classes: int, embedding_dim: int, dtype=jnp.float32, **hparams) -> dict:
  """Creates the learnable parameters of the loss `name`: a dict of arrays, empty for a parameter-free loss.

  Layouts (C = `num_classes`, D = `embedding_dim`):
  - `proxy_nca`, `proxy_anchor`: `{"proxies": [C, D]}`;
  - `normalized_softmax`, `cosface`, `arcface`: `{"weights": [C, D]}` (one row per class; pytorch-metric-learning
    stores the transpose, `[D, C]`);
  - `subcenter_arcface` (`sub_centers` K), `softtriple` (`centers_per_class` K): `{"weights": [C * K, D]}`, class
    c's K centres in rows `c * K ... c * K + K - 1`.
  Each module's docstring gives the initialisation (the paper's code / pytorch-metric-learning's default).

  Args:
    name: a registry name.
    key: a `jax.random` key.
    num_classes: number of classes C (labels are `0 ... C - 1`).
    embedding_dim: embedding dimension D.
    dtype: floating dtype of the parameters.
    **hparams: the loss's hyperparameters as they will be passed to the loss (those that fix the layout, such as
      `sub_centers`, are read; the others are accepted so that one dict can serve both calls).

  Returns:
    The parameter pytree, to pass as `losses.get(name)(embeddings, labels, params=..., **hparams)`.
  """
  known = _hyperparameters(name)
  unknown = sorted(set(hparams) - set(known))
  if unknown:
    raise TypeError(f"unknown hyperparameter(s) {unknown} for loss {name!r}; it takes {sorted(known)}.")
  for value, arg in ((num_classes, "num_classes"), (embedding_dim, "embedding_dim")):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"`{arg}` must be a positive integer, got {value!r}.")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"`dtype` must be a floating-point dtype, got {dtype}.")
  if name not in _INITS:
    return {}
  return _INITS[name](key, num_classes=num_classes, embedding_dim=embedding_dim, dtype=dtype,
                      **{**known, **hparams})


def check_embedding_inputs(embeddings, labels, valid=None):
  """Validates the convenience form's arguments; returns `(embeddings, labels, valid)` with `valid` filled in.

  `labels` may be class ids `[B]` or multi-hot `[B, L]`.
  """
  embeddings = _checks.check_embeddings(embeddings, "embeddings")
  labels = _checks.check_labels(labels, embeddings.shape[0], "labels", multi_hot=True)
  valid = _checks.check_valid(valid, embeddings.shape[0], "valid")
  return embeddings, labels, valid
