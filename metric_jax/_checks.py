"""Trace-time argument checks shared by the whole package.

Every check runs on static shapes and dtypes, so it fails when a function is traced (inside `jax.jit` too) with a message
that names the offending argument, instead of producing a silent broadcast or NaN later.
"""

from __future__ import annotations

from typing import Optional

import jax
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


def is_concrete(x) -> bool:
  """True when `x` holds values known now (numpy or a committed jax array), False for a tracer under jit / vmap."""
  return not isinstance(x, jax.core.Tracer)


def check_labels(labels, size: int, name: str = "labels", *, multi_hot: bool = False):
  """Checks integer labels `[size]`, or (with `multi_hot`) multi-hot labels `[size, L]`.

  Multi-hot labels are boolean or integer 0/1 with `L >= 2` columns: row i carries label l where `labels[i, l]` is
  True / non-zero. A `[size, 1]` array is refused as ambiguous (a column of class ids looks the same). Integer
  multi-hot values other than 0 and 1 are an error when the values are known at trace time (not under `jit`); a
  traced array counts any non-zero entry as a label. Without `multi_hot`, a 2-D array is refused with a message saying
  that this function takes one class per row.
  """
  if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
    labels = np.asarray(labels)
  shape, dtype = _shape(labels), _dtype(labels)
  if len(shape) == 2 and multi_hot:
    if shape[0] != size:
      raise ValueError(f"`{name}` has {shape[0]} rows but {size} rows were given.")
    if shape[1] < 2:
      raise ValueError(f"`{name}` has shape {shape}: pass class ids as a 1-D array [{size}], or multi-hot labels "
                       f"[{size}, L] with L >= 2 label columns.")
    if not (dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.integer)):
      raise TypeError(f"multi-hot `{name}` must hold booleans or integers 0/1, got dtype {dtype}.")
    if dtype != jnp.bool_ and is_concrete(labels):
      values = np.asarray(labels)
      if values.size and not np.isin(values, (0, 1)).all():
        bad = values[~np.isin(values, (0, 1))][0]
        raise ValueError(f"multi-hot `{name}` must hold 0/1 values, found {bad}; pass class ids as a 1-D array "
                         f"[{size}] instead.")
    return jnp.asarray(labels)
  if len(shape) != 1:
    if len(shape) == 2:
      raise ValueError(f"`{name}` must be 1-D integer class ids [{size}] here (multi-hot labels [B, L] are not "
                       f"supported by this function), got shape {shape}.")
    accepted = f"1-D [{size}] or multi-hot 2-D [{size}, L]" if multi_hot else "1-D"
    raise ValueError(f"`{name}` must be {accepted}, got shape {shape}.")
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"`{name}` must hold integers, got dtype {dtype}.")
  if shape[0] != size:
    raise ValueError(f"`{name}` has length {shape[0]} but {size} rows were given.")
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
    "check_float_array", "check_embeddings", "check_matrix", "check_labels", "is_concrete", "check_valid",
    "check_positive", "check_choice", "optional",
]
