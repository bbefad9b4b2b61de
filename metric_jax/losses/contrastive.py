"""Contrastive loss (Hadsell et al. 2006) and PairNet's pairwise loss PLoss (S0).

Matrix forms take a `[B, M]` distance matrix; registry forms build it from `[B, D]` embeddings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import _checks, labels as _labels
from metric_jax.losses import _finite, _metric
from metric_jax.losses._registry import register

REDUCTIONS = ("mean_nonzero", "mean", "sum")
DISTANCES = _metric.DISTANCES   # "euclidean", "squared_euclidean", "cosine" (1 - cos)


def _safe_divide(num, den):
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def contrastive_loss(distance, query_labels, key_labels=None, *, query_valid=None, key_valid=None,
                     self_offset="auto", pos_margin: float = 0.0, neg_margin: float = 1.0, hinge_power: int = 1,
                     reduction: str = "mean_nonzero"):
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

  Returns:
    Scalar loss; 0 when there is no positive and no negative pair.

  References:
    Hadsell, Chopra, LeCun, "Dimensionality reduction by learning an invariant mapping", CVPR 2006.
  """
  d, masks = _labels.check_matrix_inputs(distance, query_labels, key_labels, query_valid, key_valid, self_offset,
                                         matrix_name="distance")
  _checks.check_choice(reduction, "reduction", REDUCTIONS)
  _checks.check_choice(hinge_power, "hinge_power", (1, 2))
  _checks.check_positive(neg_margin, "neg_margin", strict=False)
  d, alarm = _finite.sanitize(d, masks.valid)
  scale = 1.0 if hinge_power == 1 else 0.5
  pos_terms = jnp.where(masks.positive, scale * jnp.maximum(d - pos_margin, 0.0) ** hinge_power, 0.0)
  neg_terms = jnp.where(masks.negative, scale * jnp.maximum(neg_margin - d, 0.0) ** hinge_power, 0.0)
  if reduction == "sum":
    return jnp.sum(pos_terms) + jnp.sum(neg_terms) + alarm
  if reduction == "mean":
    count = jnp.sum(masks.positive) + jnp.sum(masks.negative)
    return _safe_divide(jnp.sum(pos_terms) + jnp.sum(neg_terms), count) + alarm
  pos_count = jnp.sum(jax.lax.stop_gradient(pos_terms) > 0)
  neg_count = jnp.sum(jax.lax.stop_gradient(neg_terms) > 0)
  return _safe_divide(jnp.sum(pos_terms), pos_count) + _safe_divide(jnp.sum(neg_terms), neg_count) + alarm


def pairnet_loss(sq_distance, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                 b: float = 0.5, m: float = 1.0):
  """PairNet's pairwise loss PLoss on squared Euclidean distances, averaged over valid pairs.

      PLoss_ij = max(0, b - Y_ij (m - D_ij^2)),  Y_ij = +1 (same class) / -1 (different class),  0 < b <= m.

  Positives are pulled inside `D^2 < m - b`, negatives pushed beyond `D^2 > m + b`. With `b = m` it is the contrastive
  loss with margin `2m` on squared distances: `D^2` for positives and `[2m - D^2]_+` for negatives (PairNet Eq. 4).
  The paper's experiments use `m = 1` and `b` in {0, 0.5, 1}; `b = 0` is allowed (pairs are then penalized
  on the wrong side of `m` only).

  Args:
    sq_distance: `[B, M]` squared Euclidean distances `D^2`.
    query_labels, key_labels, query_valid, key_valid, self_offset: as in `contrastive_loss`.
    b: half-width of the margin band, `0 <= b <= m` (default 0.5).
    m: centre of the band (default 1).

  Returns:
    Scalar: mean of PLoss over valid (ordered) pairs; 0 if there is none.

  References:
    PairNet: "Pairwise constraint with classification" (S0 in DESIGN.md), Eq. 3-4.
  """
  d2, masks = _labels.check_matrix_inputs(sq_distance, query_labels, key_labels, query_valid, key_valid, self_offset,
                                          matrix_name="sq_distance")
  _checks.check_positive(m, "m")
  _checks.check_positive(b, "b", strict=False)
  if isinstance(b, (int, float)) and isinstance(m, (int, float)) and b > m:
    raise ValueError(f"`b` must satisfy 0 <= b <= m, got b={b}, m={m}.")
  d2, alarm = _finite.sanitize(d2, masks.valid)
  y = jnp.where(masks.positive, 1.0, -1.0)
  terms = jnp.where(masks.valid, jnp.maximum(b - y * (m - d2), 0.0), 0.0)
  return _safe_divide(jnp.sum(terms), jnp.sum(masks.valid)) + alarm


@register("contrastive")
def contrastive(embeddings, labels, *, valid=None, distance: str = "euclidean", pos_margin: float = 0.0,
                neg_margin: float = 1.0, hinge_power: int = 1, reduction: str = "mean_nonzero"):
  """Contrastive loss of a `[B, D]` batch with integer labels `[B]`; see `contrastive_loss`.

  `distance`: `"euclidean"` (default, pytorch-metric-learning's `LpDistance(normalize_embeddings=False)`),
  `"squared_euclidean"` or `"cosine"` (`1 - cos`, embeddings L2-normalized inside). Euclidean distances use the
  embeddings as given (normalize them first for the reference library's default). Hadsell et al.'s loss is
  `hinge_power=2` on the (plain) Euclidean distance.
  """
  embeddings, labels, valid, alarm = _finite.embedding_inputs(embeddings, labels, valid)
  return contrastive_loss(_metric.distance_matrix(embeddings, distance), labels, query_valid=valid,
                          pos_margin=pos_margin, neg_margin=neg_margin, hinge_power=hinge_power,
                          reduction=reduction) + alarm


@register("pairnet")
def pairnet(embeddings, labels, *, valid=None, b: float = 0.5, m: float = 1.0, distance: str = "squared_euclidean"):
  """PairNet PLoss of a `[B, D]` batch; see `pairnet_loss`.

  `distance`: `"squared_euclidean"` (default, the paper's `D^2`), `"euclidean"` or `"cosine"` (`1 - cos`): the band
  `max(0, b - Y (m - D))` is then placed on that distance instead of `D^2`.
  """
  embeddings, labels, valid, alarm = _finite.embedding_inputs(embeddings, labels, valid)
  return pairnet_loss(_metric.distance_matrix(embeddings, distance), labels, query_valid=valid, b=b, m=m) + alarm


__all__ = ["contrastive_loss", "pairnet_loss", "contrastive", "pairnet", "REDUCTIONS"]
