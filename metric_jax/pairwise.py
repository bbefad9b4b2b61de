"""Pairwise matrices between queries `[B, D]` and keys `[M, D]`.

All functions accept `keys=None`, meaning keys are the queries themselves (a square `[B, B]` matrix). Distances are
built from one matmul (`|q|^2 + |k|^2 - 2 q.k`), so they cost the same as the similarity floor. `euclidean` has a finite
(zero) gradient where the distance is zero (duplicate or identical embeddings), unlike `sqrt` applied naively.

Identical rows are exactly 0 apart (and exactly cosine-similar 1) in every execution mode. `|q|^2 + |k|^2 - 2 q.k`
cancels catastrophically for nearby rows: each of the three terms carries its own rounding error, and `jit`, eager
execution and `vmap` sum them in different orders (fused reductions, batched matmuls), so two identical rows get a tiny
positive or negative noise instead of 0, differently in each mode. A loss that counts "non-zero" terms or compares
distances then changes its value between modes. Two measures remove the noise:

- square matrices (`keys=None`) take `|q_i|^2` from the diagonal of the Gram matrix `Q Q^T` itself, so for identical
  rows `i`, `j` the three terms are entries of the same matmul that compute the same products in the same order, and
  cancel exactly (verified on CPU; the same argument covers reduced-precision matmuls such as TF32 on GPUs, whose
  input rounding is then the same for all three terms, as long as the kernel accumulates every entry alike);
- a relative clamp: a squared distance `D_ij <= tol * (|q_i|^2 + |k_j|^2)` is exactly 0, and a cosine similarity
  `>= 1 - tol` (`<= -1 + tol`) is exactly 1 (-1), with `tol = (4 + 2 sqrt(D)) * eps` (`eps` the machine epsilon of the
  dtype; `cancellation_tolerance`).

Why this tolerance: each of `|q|^2`, `|k|^2` and `q.k` is a length-`D` sum computed with a relative error of about
`sqrt(D) * eps / 2` (the probabilistic rounding-error bound of a sum of `D` terms, Higham & Mary, "A new approach to
probabilistic rounding error analysis", SIAM J. Sci. Comput. 2019; the worst case `D * eps` needs every rounding to go
the same way), plus one rounding per addition. For identical rows this leaves `|D_ij| <~ (2 + sqrt(D)) * eps *
(|q|^2 + |k|^2)`; we double it. Measured on CPU (float32, 256 rows of random norms 0.01-100, jit / eager / vmap, with
separately computed norms as in the rectangular case): at most `0.7 sqrt(D) eps` for D <= 64 and 10 eps at D = 512
(the tolerance there is 49 eps). A squared distance below the tolerance is below what the formula can resolve anyway
(its rounding noise has that size), so reporting 0 discards no information: it amounts to Euclidean distances below
`sqrt(2 tol) * max(|q|, |k|)` (about `3e-3 |q|` for D = 512 in float32, `1e-7 |q|` in float64). Gradients stay finite:
the clamped entries have gradient 0 (the true gradient there, `2 (q - k)`, is itself below the noise).

16-bit inputs (bfloat16, float16) are computed in float32 and the result is rounded back to the input dtype, so the
tolerance is float32's, not a coarse 16-bit one. The rectangular form's guarantee assumes the matmul runs at the
dtype's precision (`precision="highest"` on GPUs / TPUs, whose default float32 matmul is TF32 / bfloat16).
"""

from __future__ import annotations

import math

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


def _at_least_float32(queries, keys):
  """`(queries, keys, output dtype)`: 16-bit floats promoted to float32 for the computation."""
  dtype = jnp.result_type(queries, keys)
  if jnp.finfo(dtype).bits < 32:
    return queries.astype(jnp.float32), keys.astype(jnp.float32), dtype
  return queries, keys, dtype


def cancellation_tolerance(dtype, dim: int) -> float:
  """`(4 + 2 sqrt(dim)) * eps(dtype)`: the relative size below which `|q|^2 + |k|^2 - 2 q.k` is rounding noise."""
  return (4.0 + 2.0 * math.sqrt(dim)) * float(jnp.finfo(dtype).eps)


def dot_product(queries, keys=None, *, precision=None):
  """Dot-product similarity `S_ij = q_i . k_j`, shape `[B, M]`."""
  queries, keys = _operands(queries, keys)
  return jnp.matmul(queries, keys.T, precision=precision)


def l2_normalize(x, axis: int = -1, eps: float = 1e-12):
  """`x / max(|x|, eps)`; zero vectors stay zero and have finite gradients."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def cosine_similarity(queries, keys=None, *, eps: float = 1e-12, precision=None):
  """Cosine similarity `S_ij = q_i . k_j / (|q_i| |k_j|)`, shape `[B, M]`, in `[-1, 1]`.

  Zero vectors give similarity 0. Rows with the same direction (identical rows in particular) give exactly 1 and
  opposite rows exactly -1 (entries within `cancellation_tolerance` of +-1 are snapped; see the module docstring).
  """
  same = keys is None
  queries, keys = _operands(queries, keys)
  queries, keys, dtype = _at_least_float32(queries, keys)
  qn = l2_normalize(queries, eps=eps)
  kn = qn if same else l2_normalize(keys, eps=eps)
  s = jnp.matmul(qn, kn.T, precision=precision)
  tol = cancellation_tolerance(s.dtype, queries.shape[1])
  s = jnp.where(s >= 1.0 - tol, 1.0, jnp.where(s <= tol - 1.0, -1.0, s))   # NaN stays NaN
  return s.astype(dtype)


def cosine_distance(queries, keys=None, *, eps: float = 1e-12, precision=None):
  """Cosine distance `D_ij = 1 - cos(q_i, k_j)`, shape `[B, M]`, in `[0, 2]`; exactly 0 for identical rows.

  For L2-normalized rows it is half the squared Euclidean distance, `|q - k|^2 / 2`. Zero vectors are at distance 1
  from everything.
  """
  return 1.0 - cosine_similarity(queries, keys, eps=eps, precision=precision)


def squared_euclidean(queries, keys=None, *, precision=None):
  """Squared Euclidean distance `D_ij = |q_i - k_j|^2 = |q_i|^2 + |k_j|^2 - 2 q_i.k_j`, shape `[B, M]`.

  Entries below `cancellation_tolerance * (|q_i|^2 + |k_j|^2)` (negative ones included) are exactly 0, so identical
  rows are exactly 0 apart in every execution mode (see the module docstring).
  """
  same = keys is None
  queries, keys = _operands(queries, keys)
  queries, keys, dtype = _at_least_float32(queries, keys)
  gram = jnp.matmul(queries, keys.T, precision=precision)
  if same:
    qq = kk = jnp.diagonal(gram)   # the same matmul entries as the cross terms: identical rows cancel exactly
  else:
    qq = jnp.sum(jnp.square(queries), axis=1)
    kk = jnp.sum(jnp.square(keys), axis=1)
  scale = qq[:, None] + kk[None, :]
  d2 = scale - 2.0 * gram
  tol = cancellation_tolerance(d2.dtype, queries.shape[1])
  return jnp.where(d2 <= tol * scale, 0.0, d2).astype(dtype)   # NaN stays NaN (a non-finite row must show)


def safe_sqrt(x):
  """`sqrt(x)` for `x >= 0` whose gradient is 0 (not inf/NaN) at `x == 0`; NaN (and negative) inputs give NaN."""
  zero = x == 0
  return jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, x)))


def euclidean(queries, keys=None, *, precision=None):
  """Euclidean distance `D_ij = |q_i - k_j|`, shape `[B, M]`, with gradient 0 where the distance is 0.

  Exactly 0 for identical rows in every execution mode (see `squared_euclidean`).
  """
  return safe_sqrt(squared_euclidean(queries, keys, precision=precision))


_BY_NAME = {
    "dot": dot_product,
    "cosine": cosine_similarity,
    "squared_euclidean": squared_euclidean,
    "euclidean": euclidean,
    "cosine_distance": cosine_distance,
}

SIMILARITIES = ("dot", "cosine")
DISTANCES = ("squared_euclidean", "euclidean", "cosine_distance")


def get(name: str):
  """Returns the pairwise function registered under `name` (`dot`, `cosine`, `squared_euclidean`, `euclidean`,
  `cosine_distance`)."""
  _checks.check_choice(name, "metric", _BY_NAME)
  return _BY_NAME[name]


__all__ = [
    "dot_product", "cosine_similarity", "cosine_distance", "squared_euclidean", "euclidean", "l2_normalize",
    "safe_sqrt", "cancellation_tolerance", "get", "SIMILARITIES", "DISTANCES",
]
