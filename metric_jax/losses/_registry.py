"""Name -> loss registry behind `metric_jax.losses.get`.

Every registered function has the convenience signature `fn(embeddings [B, D], labels [B], *, valid=None, **hparams)`
and returns a scalar. It builds the pairwise matrix its loss expects and calls the loss's matrix form with the batch as
both queries and keys (self pairs excluded).
"""

from __future__ import annotations

from typing import Callable, Dict

from metric_jax import _checks

_LOSSES: Dict[str, Callable] = {}


def register(name: str):
  """Decorator registering an embedding-form loss under `name`."""

  def decorator(fn):
    if name in _LOSSES:
      raise ValueError(f"loss {name!r} is registered twice.")
    _LOSSES[name] = fn
    return fn

  return decorator


def get(name: str) -> Callable:
  """Returns the loss `fn(embeddings, labels, *, valid=None, **hparams) -> scalar` registered as `name`."""
  if name not in _LOSSES:
    raise ValueError(f"unknown loss name {name!r}; registered: {', '.join(sorted(_LOSSES))}.")
  return _LOSSES[name]


def names():
  """Sorted registered loss names."""
  return sorted(_LOSSES)


def check_embedding_inputs(embeddings, labels, valid=None):
  """Validates the convenience form's arguments; returns `(embeddings, labels, valid)` with `valid` filled in."""
  embeddings = _checks.check_embeddings(embeddings, "embeddings")
  labels = _checks.check_labels(labels, embeddings.shape[0], "labels")
  valid = _checks.check_valid(valid, embeddings.shape[0], "valid")
  return embeddings, labels, valid
