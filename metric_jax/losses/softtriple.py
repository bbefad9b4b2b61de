"""SoftTriple loss (Qian et al. 2019): a normalized softmax with K learnable centres per class.

`params = {"weights": [C * K, D]}`, class c's centres `w_{c,1..K}` in rows `c * K ... c * K + K − 1` (pytorch-metric-
learning stores the transpose, `[D, C * K]`, in the same class-major order). With `s_ick = cos(x_i, w_{c,k})`
(both L2-normalized), the similarity to class c is a softmax-weighted mix of its centres,

  S_ic = Σ_k [exp(s_ick / γ) / Σ_k' exp(s_ick' / γ)] · s_ick,

and the loss is a margin softmax cross-entropy plus a regularizer that lets centres of a class merge:

  ℓ_i = −log[ exp(λ(S_{i,y_i} − δ)) / (exp(λ(S_{i,y_i} − δ)) + Σ_{c≠y_i} exp(λ S_ic)) ],
  R   = Σ_c Σ_{t<t'} ‖ŵ_{c,t} − ŵ_{c,t'}‖₂ = Σ_c Σ_{t<t'} √(2 − 2 ŵ_{c,t}·ŵ_{c,t'}),
  L   = 1/|B| Σ_i ℓ_i + τ · R / (C K (K − 1)).

The paper's defaults: λ = 20, γ = 0.1, δ = 0.01, τ = 0.2, K = 10. pytorch-metric-learning's `SoftTripleLoss` has no
centre regularizer (it equals `tau=0` here); the authors' code adds 1e-5 under the root for a finite gradient, which
here is the exact norm with a zero gradient where two centres coincide. Class ids only (one target class per sample).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from metric_jax import _checks, pairwise
from metric_jax.losses import _classes
from metric_jax.losses._registry import register


def _check_count(value, name):
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
  return value


def _relaxed_similarity(centers, gamma):
  """`S_ic = Σ_k softmax_k(s_ick / γ) s_ick` from `[B, K, C]` similarities (the shift keeps every exponent ≤ 0)."""
  shift = jax.lax.stop_gradient(jnp.max(centers, axis=1, keepdims=True))
  weights = jnp.exp((centers - shift) / gamma)
  return jnp.sum(weights * centers, axis=1) / jnp.sum(weights, axis=1)


def softtriple_loss(matrix, labels, *, query_valid=None, centers_per_class: int = 10, scale: float = 20.0,
                    gamma: float = 0.1, margin: float = 0.01, axis_name=None, block_size=None):
  """SoftTriple classification term `1/|B| Σ_i ℓ_i` on `[B, C * K]` cosine similarities to the centres.

  The centre regularizer depends on the centres only; the registry form `softtriple` adds `tau · R / (C K (K − 1))`
  (see `softtriple_regularizer`).

  Args:
    matrix: cosine similarities `s` to the centres, `[B, C * K]`, class c in columns `c * K ... c * K + K − 1`.
    labels: integer class ids `[B]` in `0 ... C − 1`.
    query_valid: optional boolean `[B]`; False rows are padding.
    centers_per_class: `K` (paper: 10).
    scale: `λ`, the scale of the class logits (paper: 20).
    gamma: `γ`, the temperature of the softmax over a class's centres (paper: 0.1).
    margin: `δ`, subtracted from the target class similarity (paper: 0.01).
    axis_name, block_size: rows sharded over a `shard_map` axis (this device's rows; the mean runs over every
      device's valid rows) / evaluated in blocks; see `metric_jax.losses._classes`.

  Returns:
    Scalar loss, the mean over valid rows.

  References:
    Qian, Shang, Sun, Hu, Li, Jin, "SoftTriple Loss: Deep Metric Learning Without Triplet Sampling", ICCV 2019.
  """
  _check_softtriple(centers_per_class, scale, gamma, margin)
  problem = _classes.from_class_matrix(matrix, labels, query_valid, loss="softtriple",
                                       num_columns_per_class=centers_per_class, multi_hot_reason=_ONE_TARGET,
                                       axis_name=axis_name, block_size=block_size)
  return _softtriple(problem, centers_per_class, scale, gamma, margin, layout="class")


_ONE_TARGET = "its softmax cross-entropy has one target class per sample."


def _check_softtriple(centers_per_class, scale, gamma, margin):
  _check_count(centers_per_class, "centers_per_class")
  for value, name in ((scale, "scale"), (gamma, "gamma")):
    _checks.check_positive(value, name)
  _checks.check_positive(margin, "margin", strict=False)


def _softtriple(problem, centers_per_class, scale, gamma, margin, layout):
  def per_row(rows, consts):
    similarity = _relaxed_similarity(_classes.per_center(rows.matrix, centers_per_class, layout), gamma)  # S_ic
    return _classes.softmax_cross_entropy(scale * (similarity - margin * rows.target), rows.target)

  return problem.mean_over_rows(per_row)


def softtriple_regularizer(weights, centers_per_class: int = 10):
  """`R / (C K (K − 1))`, `R = Σ_c Σ_{t<t'} ‖ŵ_{c,t} − ŵ_{c,t'}‖₂` over the normalized centres of each class.

  Args:
    weights: the centres, `[C * K, D]`, class-major.
    centers_per_class: `K`; with K = 1 there is no pair and the regularizer is 0.

  Returns:
    Scalar.
  """
  _check_count(centers_per_class, "centers_per_class")
  weights = _checks.check_float_array(weights, "weights", 2)
  if centers_per_class == 1:
    return jnp.zeros((), weights.dtype)
  num_classes = weights.shape[0] // centers_per_class
  unit = pairwise.l2_normalize(weights).reshape(num_classes, centers_per_class, -1)
  gram = jnp.einsum("ckd,cjd->ckj", unit, unit)                                  # [C, K, K]
  upper = jnp.triu(jnp.ones((centers_per_class, centers_per_class), bool), k=1)
  distance = pairwise.safe_sqrt(jnp.maximum(2.0 - 2.0 * jnp.where(upper, gram, 1.0), 0.0))
  return jnp.sum(distance) / (num_classes * centers_per_class * (centers_per_class - 1))


def _init_softtriple(key, *, num_classes, embedding_dim, dtype, centers_per_class, **_):
  """Uniform in `±1 / √(C K)`: the authors' code, `kaiming_uniform_(a=√5)` of the `[D, C K]` matrix."""
  _check_count(centers_per_class, "centers_per_class")
  rows = num_classes * centers_per_class
  return {"weights": _classes.uniform_init(key, (rows, embedding_dim), dtype, 1.0 / math.sqrt(rows))}


@register("softtriple", init=_init_softtriple, multi_hot=False)
def softtriple(embeddings, labels, *, params=None, valid=None, centers_per_class: int = 10, scale: float = 20.0,
               gamma: float = 0.1, margin: float = 0.01, tau: float = 0.2, axis_name=None, block_size=None,
               memory=None):
  """SoftTriple loss of `[B, D]` embeddings with class ids `[B]` and `params = {"weights": [C * K, D]}`: the
  classification term of `softtriple_loss` plus `tau` times `softtriple_regularizer` (τ, paper: 0.2).

  Scale: `axis_name` (local rows inside `shard_map`, parameters replicated; the regularizer depends on the replicated
  centres only), `block_size` (rows in blocks); `memory` is refused (the keys are the centres). See
  `metric_jax.losses._classes`.
  """
  _check_softtriple(centers_per_class, scale, gamma, margin)
  _checks.check_positive(tau, "tau", strict=False)
  problem = _classes.from_class_embeddings(
      embeddings, labels, valid, params, "weights", "softtriple", matrix_fn=_classes.cosine_to_classes,
      prepare=lambda w: _classes.center_major(w, centers_per_class), rows_per_class=centers_per_class,
      rows_per_class_name="centers_per_class", multi_hot_reason=_ONE_TARGET, axis_name=axis_name,
      block_size=block_size, memory=memory)
  loss = _softtriple(problem, centers_per_class, scale, gamma, margin, layout="center")
  if isinstance(tau, (int, float)) and tau == 0:
    return loss
  return loss + tau * softtriple_regularizer(params["weights"], centers_per_class)


__all__ = ["softtriple_loss", "softtriple_regularizer", "softtriple"]
