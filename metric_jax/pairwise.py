"""Pairwise matrices between queries `[B, D]` and keys `[M, D]`.

All functions accept `keys=None`, meaning keys are the queries themselves (a square `[B, B]` matrix). Distances are built
from one matmul (`|q|^2 + |k|^2 - 2 q.k`), clamped at zero, so they cost the same as the similarity floor. `euclidean`
has a finite (zero) gradient where the distance is zero (duplicate or identical embeddings), unlike `sqrt` applied naively.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from metric_jax import _checks


def _operands(queries, keys):
  queries = _checks.check_embeddings(queries, "queries")
  if keys is None:
    return queries, queries
  keys = _checks.check_embeddings(keys, "keys")
  if keys.shape[1] != queries.shape[1]:
    raise ValueError(
        f"`keys` have dimension {keys.shape[1]} but `queries` have dimension {queries.shape[1]}.")
  return queries, keys


def dot_product(queries, keys=None, *, precision=None):
  """Dot-product similarity `S_ij = q_i . k_j`, shape `[B, M]`."""
  queries, keys = _operands(queries, keys)
  return jnp.matmul(queries, keys.T, precision=precision)


def l2_normalize(x, axis: int = -1, eps: float = 1e-12):
  """`x / max(|x|, eps)`; zero vectors stay zero and have finite gradients."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def cosine_similarity(queries, keys=None, *, eps: float = 1e-12, precision=None):
  """Cosine similarity `S_ij = q_i . k_j / (|q_i| |k_j|)`, shape `[B, M]`; zero vectors give similarity 0."""
  same = keys is None
  queries, keys = _operands(queries, keys)
  qn = l2_normalize(queries, eps=eps)
  kn = qn if same else l2_normalize(keys, eps=eps)
  return jnp.matmul(qn, kn.T, precision=precision)


def squared_euclidean(queries, keys=None, *, precision=None):
  """Squared Euclidean distance `D_ij = |q_i - k_j|^2 = |q_i|^2 + |k_j|^2 - 2 q_i.k_j`, clamped at 0, shape `[B, M]`."""
  same = keys is None
  queries, keys = _operands(queries, keys)
  qq = jnp.sum(jnp.square(queries), axis=1)
  kk = qq if same else jnp.sum(jnp.square(keys), axis=1)
  d2 = qq[:, None] + kk[None, :] - 2.0 * jnp.matmul(queries, keys.T, precision=precision)
  return jnp.maximum(d2, 0.0)


def safe_sqrt(x):
  """`sqrt(x)` for `x >= 0` whose gradient is 0 (not inf/NaN) at `x == 0`."""
  positive = x > 0
  safe = jnp.where(positive, x, 1.0)
  return jnp.where(positive, jnp.sqrt(safe), 0.0)


def euclidean(queries, keys=None, *, precision=None):
  """Euclidean distance `D_ij = |q_i - k_j|`, shape `[B, M]`, with gradient 0 where the distance is 0."""
  return safe_sqrt(squared_euclidean(queries, keys, precision=precision))


_BY_NAME = {
    "dot": dot_product,
    "cosine": cosine_similarity,
    "squared_euclidean": squared_euclidean,
    "euclidean": euclidean,
}

SIMILARITIES = ("dot", "cosine")
DISTANCES = ("squared_euclidean", "euclidean")


def get(name: str):
  """Returns the pairwise function registered under `name` (`dot`, `cosine`, `squared_euclidean`, `euclidean`)."""
  _checks.check_choice(name, "metric", _BY_NAME)
  return _BY_NAME[name]


__all__ = [
    "dot_product", "cosine_similarity", "squared_euclidean", "euclidean", "l2_normalize", "safe_sqrt", "get",
    "SIMILARITIES", "DISTANCES",
]
