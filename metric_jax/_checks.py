"""Trace-time argument checks shared by the whole package.

Every check runs on static shapes and dtypes, so it fails when a function is traced (inside `jax.jit` too) with a message
that names the offending argument, instead of producing a silent broadcast or NaN later.
"""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
import numpy as np


def _shape(x):
  return tuple(np.shape(x))


def _dtype(x):
  return jnp.result_type(x)


def check_float_array(x, name: str, ndim: int):
  """Returns `x` as a jnp array after checking it is floating point with `ndim` axes."""
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    x = jnp.asarray(x)
  if len(_shape(x)) != ndim:
    raise ValueError(f"`{name}` must have {ndim} dimensions, got shape {_shape(x)}.")
  if not jnp.issubdtype(_dtype(x), jnp.floating):
    raise TypeError(f"`{name}` must be a floating-point array, got dtype {_dtype(x)}.")
  return jnp.asarray(x)


def check_embeddings(x, name: str = "embeddings"):
  """Checks a `[B, D]` floating-point embedding matrix."""
  return check_float_array(x, name, 2)


def check_matrix(x, name: str = "matrix"):
  """Checks a `[B, M]` floating-point pairwise matrix."""
  return check_float_array(x, name, 2)


def check_labels(labels, size: int, name: str = "labels"):
  """Checks integer labels of shape `[size]`."""
  if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
    labels = np.asarray(labels)
  if len(_shape(labels)) != 1:
    raise ValueError(f"`{name}` must be 1-D, got shape {_shape(labels)}.")
  if not jnp.issubdtype(_dtype(labels), jnp.integer):
    raise TypeError(f"`{name}` must hold integers, got dtype {_dtype(labels)}.")
  if _shape(labels)[0] != size:
    raise ValueError(f"`{name}` has length {_shape(labels)[0]} but {size} rows were given.")
  return jnp.asarray(labels)


def check_valid(valid, size: int, name: str = "valid"):
  """Checks an optional boolean mask of shape `[size]`; returns an all-True mask when `valid` is None."""
  if valid is None:
    return jnp.ones((size,), dtype=bool)
  if not hasattr(valid, "shape") or not hasattr(valid, "dtype"):
    valid = np.asarray(valid)
  if _shape(valid) != (size,):
    raise ValueError(f"`{name}` must have shape ({size},), got {_shape(valid)}.")
  if _dtype(valid) != jnp.bool_:
    raise TypeError(f"`{name}` must be a boolean mask, got dtype {_dtype(valid)}.")
  return jnp.asarray(valid)


def check_positive(value, name: str, *, strict: bool = True):
  """Checks a Python number hyperparameter is positive (or non-negative when `strict` is False)."""
  if isinstance(value, (int, float)):
    if (strict and not value > 0) or (not strict and not value >= 0):
      kind = "positive" if strict else "non-negative"
      raise ValueError(f"`{name}` must be {kind}, got {value}.")
  return value


def check_choice(value, name: str, choices):
  if value not in choices:
    raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}.")
  return value


def optional(x, default_fn):
  return default_fn() if x is None else x


__all__ = [
    "check_float_array", "check_embeddings", "check_matrix", "check_labels", "check_valid", "check_positive",
    "check_choice", "optional",
]
