"""Contrastive loss (Hadsell et al. 2006) and PairNet's pairwise loss PLoss (S0).

Matrix forms take a `[B, M]` distance matrix; registry forms build it from `[B, D]` embeddings. Both take
`axis_name` (rows sharded over a `shard_map` axis, global-batch loss), `block_size` (query rows in blocks) and the
registry forms `memory` (extra keys); see `metric_jax.losses._shard`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import _checks
from metric_jax.losses import _metric, _shard
from metric_jax.losses._registry import register

REDUCTIONS = ("mean_nonzero", "mean", "sum")
DISTANCES = _metric.DISTANCES   # "euclidean", "squared_euclidean", "cosine" (1 - cos)


def _safe_divide(num, den):
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def contrastive_loss(distance, query_labels, key_labels=None, *, query_valid=None, key_valid=None,
                     self_offset="auto", pos_margin: float = 0.0, neg_margin: float = 1.0, hinge_power: int = 1,
                     reduction: str = "mean_nonzero", axis_name=None, block_size=None):
  """Contrastive loss on a distance matrix.

      positive pair:  l_ij = c * [D_ij - pos_margin]_+^k
      negative pair:  l_ij = c * [neg_margin - D_ij]_+^k

  with `k = hinge_power` and `c = 1` for `k = 1` (pytorch-metric-learning's `ContrastiveLoss`) or `c = 1/2` for `k = 2`
  (Hadsell et al.'s `1/2 D^2`, `1/2 [m - D]_+^2` with `pos_margin = 0`, `neg_margin = m`).

  Reductions:
    `"mean_nonzero"` (default, pytorch-metric-learning's `AvgNonZeroReducer` on its two sub-losses): the mean of the
      positive terms that are > 0 plus the mean of the negative terms that are > 0 (each 0 if there is none);
    `"mean"`: sum of all terms / number of valid pairs (positive + negative);
    `"sum"`: sum of all terms.
  Every ordered pair (i, j), i != j, counts once (so an unordered pair counts twice in a square matrix, as in the
  reference library).

  Args:
    distance: `[B, M]` distances (Euclidean by default in the registry form).
    query_labels: integer `[B]`. key_labels: integer `[M]` or None (keys = queries).
    query_valid, key_valid: optional boolean `[B]` / `[M]` padding masks.
    self_offset: see `metric_jax.labels`.
    pos_margin: distance below which positives are not penalized (default 0).
    neg_margin: distance beyond which negatives are not penalized (default 1).
    hinge_power: 1 or 2.
    reduction: one of `REDUCTIONS`.
    axis_name: inside `shard_map`, the axis over which the query rows are sharded (`distance` holds this device's
      `[b, M]` rows; `key_labels=None` means the gathered batch); see `metric_jax.losses._shard`.
    block_size: evaluate the query rows in blocks of this many rows (rematerialized in the backward pass).

  Returns:
    Scalar loss; 0 when there is no positive and no negative pair.

  References:
    Hadsell, Chopra, LeCun, "Dimensionality reduction by learning an invariant mapping", CVPR 2006.
  """
  problem = _shard.from_matrix(distance, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size, matrix_name="distance")
  return _contrastive(problem, pos_margin, neg_margin, hinge_power, reduction)


def _check_contrastive(neg_margin, hinge_power, reduction):
  _checks.check_choice(reduction, "reduction", REDUCTIONS)
  _checks.check_choice(hinge_power, "hinge_power", (1, 2))
  _checks.check_positive(neg_margin, "neg_margin", strict=False)


def _contrastive(problem, pos_margin, neg_margin, hinge_power, reduction):
  _check_contrastive(neg_margin, hinge_power, reduction)
  scale = 1.0 if hinge_power == 1 else 0.5

  def block(rows, extras, consts):
    d = rows.matrix
    pos_terms = jnp.where(rows.positive, scale * jnp.maximum(d - pos_margin, 0.0) ** hinge_power, 0.0)
    neg_terms = jnp.where(rows.negative, scale * jnp.maximum(neg_margin - d, 0.0) ** hinge_power, 0.0)
    if reduction == "mean_nonzero":
      pos_count = jnp.sum(jax.lax.stop_gradient(pos_terms) > 0)
      neg_count = jnp.sum(jax.lax.stop_gradient(neg_terms) > 0)
    else:
      pos_count, neg_count = jnp.sum(rows.positive), jnp.sum(rows.negative)
    dtype = d.dtype
    return None, (jnp.sum(pos_terms), jnp.sum(neg_terms), pos_count.astype(dtype), neg_count.astype(dtype))

  _, sums, alarm = problem.map(block)
  pos_sum, neg_sum, pos_count, neg_count = problem.sum_blocks(sums)
  alarm = alarm + problem.alarm
  if reduction == "sum":
    return pos_sum + neg_sum + alarm
  if reduction == "mean":
    return _safe_divide(pos_sum + neg_sum, pos_count + neg_count) + alarm
  return _safe_divide(pos_sum, pos_count) + _safe_divide(neg_sum, neg_count) + alarm


def pairnet_loss(sq_distance, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                 b: float = 0.5, m: float = 1.0, axis_name=None, block_size=None):
  """PairNet's pairwise loss PLoss on squared Euclidean distances, averaged over valid pairs.

      PLoss_ij = max(0, b - Y_ij (m - D_ij^2)),  Y_ij = +1 (same class) / -1 (different class),  0 < b <= m.

  Positives are pulled inside `D^2 < m - b`, negatives pushed beyond `D^2 > m + b`. With `b = m` it is the contrastive
  loss with margin `2m` on squared distances: `D^2` for positives and `[2m - D^2]_+` for negatives (PairNet Eq. 4).
  The paper's experiments use `m = 1` and `b` in {0, 0.5, 1}; `b = 0` is allowed (pairs are then penalized
  on the wrong side of `m` only).

  Args:
    sq_distance: `[B, M]` squared Euclidean distances `D^2`.
    query_labels, key_labels, query_valid, key_valid, self_offset, axis_name, block_size: as in `contrastive_loss`.
    b: half-width of the margin band, `0 <= b <= m` (default 0.5).
    m: centre of the band (default 1).

  Returns:
    Scalar: mean of PLoss over valid (ordered) pairs; 0 if there is none.

  References:
    PairNet: "Pairwise constraint with classification" (S0 in DESIGN.md), Eq. 3-4.
  """
  problem = _shard.from_matrix(sq_distance, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size, matrix_name="sq_distance")
  return _pairnet(problem, b, m)


def _check_pairnet(b, m):
  _checks.check_positive(m, "m")
  _checks.check_positive(b, "b", strict=False)
  if isinstance(b, (int, float)) and isinstance(m, (int, float)) and b > m:
    raise ValueError(f"`b` must satisfy 0 <= b <= m, got b={b}, m={m}.")


def _pairnet(problem, b, m):
  _check_pairnet(b, m)

  def block(rows, extras, consts):
    y = jnp.where(rows.positive, 1.0, -1.0)
    terms = jnp.where(rows.valid, jnp.maximum(b - y * (m - rows.matrix), 0.0), 0.0)
    return None, (jnp.sum(terms), jnp.sum(rows.valid).astype(rows.matrix.dtype))

  _, sums, alarm = problem.map(block)
  total, count = problem.sum_blocks(sums)
  return _safe_divide(total, count) + alarm + problem.alarm


@register("contrastive")
def contrastive(embeddings, labels, *, valid=None, distance: str = "euclidean", pos_margin: float = 0.0,
                neg_margin: float = 1.0, hinge_power: int = 1, reduction: str = "mean_nonzero", axis_name=None,
                block_size=None, memory=None):
  """Contrastive loss of a `[B, D]` batch with integer labels `[B]`; see `contrastive_loss`.

  `distance`: `"euclidean"` (default, pytorch-metric-learning's `LpDistance(normalize_embeddings=False)`),
  `"squared_euclidean"` or `"cosine"` (`1 - cos`, embeddings L2-normalized inside). Euclidean distances use the
  embeddings as given (normalize them first for the reference library's default). Hadsell et al.'s loss is
  `hinge_power=2` on the (plain) Euclidean distance.

  Scale (`metric_jax.losses._shard`): `axis_name` (local rows inside `shard_map`, global-batch loss), `block_size`
  (query rows in blocks), `memory=(embeddings [K, D], labels, valid [K])` (extra keys under stop-gradient).
  """
  _check_contrastive(neg_margin, hinge_power, reduction)
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=_metric.distance_fn(distance),
                                   axis_name=axis_name, block_size=block_size, memory=memory)
  return _contrastive(problem, pos_margin, neg_margin, hinge_power, reduction)


@register("pairnet")
def pairnet(embeddings, labels, *, valid=None, b: float = 0.5, m: float = 1.0, distance: str = "squared_euclidean",
            axis_name=None, block_size=None, memory=None):
  """PairNet PLoss of a `[B, D]` batch; see `pairnet_loss`.

  `distance`: `"squared_euclidean"` (default, the paper's `D^2`), `"euclidean"` or `"cosine"` (`1 - cos`): the band
  `max(0, b - Y (m - D))` is then placed on that distance instead of `D^2`. Scale arguments as in `contrastive`.
  """
  _check_pairnet(b, m)
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=_metric.distance_fn(distance),
                                   axis_name=axis_name, block_size=block_size, memory=memory)
  return _pairnet(problem, b, m)


__all__ = ["contrastive_loss", "pairnet_loss", "contrastive", "pairnet", "REDUCTIONS"]
