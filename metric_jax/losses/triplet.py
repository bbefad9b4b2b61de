"""Triplet margin loss with all / batch-hard / semi-hard triplets, hinge or soft, without `[B, M, M]` tensors."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import _checks, labels as _labels, mining as _mining, pairwise
from metric_jax.losses._registry import check_embedding_inputs, register

MININGS = ("all", "hard", "semihard")
REDUCTIONS = ("mean_nonzero", "mean", "sum")


def _safe_divide(num, den):
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def _tiled_soft_sums(d, window: _mining.TripletWindow, margin, batch_size: int = 8):
  """Per-anchor `sum softplus(D_ap - D_an + m)` and triplet counts over a window, one `[M, M]` tile per anchor."""

  def one_anchor(args):
    row, pos, neg, lo, hi = args
    inside = neg[None, :] & (row[None, :] > lo[:, None]) & (row[None, :] < hi[:, None]) & pos[:, None]
    x = row[:, None] - row[None, :] + margin
    terms = jnp.where(inside, jax.nn.softplus(jnp.where(inside, x, 0.0)), 0.0)
    return jnp.sum(terms), jnp.sum(inside)

  sums, counts = jax.lax.map(one_anchor, (d, window.positive, window.negative, window.lower, window.upper),
                             batch_size=batch_size)
  return sums, counts


def triplet_loss(distance, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                 margin: float = 0.2, mining: str = "all", soft: bool = False, reduction: str = "mean_nonzero"):
  """Triplet margin loss on a distance matrix.

      l_apn = [D_ap - D_an + margin]_+          (hinge)   or   softplus(D_ap - D_an + margin)   (soft=True)

  over the triplets (anchor a = query, positive p and negative n = keys) chosen by `mining`:
    `"all"`: every triplet (for the hinge, only those with `l > 0` matter);
    `"hard"`: batch-hard, one triplet per anchor: its farthest positive and closest negative (Hermans et al. 2017);
      anchors without a positive or a negative are skipped;
    `"semihard"`: every triplet with `D_ap < D_an < D_ap + margin` (FaceNet's semi-hard negatives, all of them, as
      pytorch-metric-learning's `TripletMarginMiner(type_of_triplets="semihard")`; an anchor-positive pair with no
      semi-hard negative contributes nothing; see `metric_jax.mining.semihard_triplets`).

  Reductions over the selected triplets:
    `"mean_nonzero"` (default; pytorch-metric-learning's `AvgNonZeroReducer`): sum / number of triplets with `l > 0`;
    `"mean"`: sum / number of selected triplets (for `"hard"`: anchors that have a triplet);
    `"sum"`.
  0 when no triplet is selected.

  Complexity: the hinge forms sort each anchor's negative distances once and use prefix sums and `searchsorted`
  (`O(B M log M)`); the soft forms (not separable) are tiled over anchors with `lax.map`, `O(M^2)` memory per step.

  Args:
    distance: `[B, M]` distances (Euclidean or squared Euclidean).
    query_labels: integer `[B]`; key_labels: integer `[M]` or None (keys = queries).
    query_valid, key_valid: optional boolean `[B]` / `[M]` padding masks.
    self_offset: see `metric_jax.labels`.
    margin: `m` (FaceNet uses 0.2 on squared distances of unit-norm embeddings).
    mining: `"all"`, `"hard"` or `"semihard"`.
    soft: softplus instead of the hinge (Hermans et al.'s soft margin, with `margin` added inside).
    reduction: one of `REDUCTIONS`.

  Returns:
    Scalar loss.

  References:
    Weinberger & Saul, "Distance metric learning for large margin nearest neighbor classification", JMLR 2009.
    Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015.
    Hermans, Beyer, Leibe, "In defense of the triplet loss for person re-identification", arXiv:1703.07737.
  """
  d, masks = _labels.check_matrix_inputs(distance, query_labels, key_labels, query_valid, key_valid, self_offset,
                                         matrix_name="distance")
  _checks.check_choice(mining, "mining", MININGS)
  _checks.check_choice(reduction, "reduction", REDUCTIONS)
  _checks.check_positive(margin, "margin", strict=False)
  if not isinstance(soft, bool):
    raise TypeError(f"`soft` must be a bool, got {soft!r}.")
  pos, neg = masks.positive, masks.negative

  if mining == "hard":
    hard_pos, hard_neg = _mining.batch_hard_pairs(d, pos, neg)
    has = jnp.any(hard_pos, axis=1)
    d_ap = jnp.sum(jnp.where(hard_pos, d, 0.0), axis=1)
    d_an = jnp.sum(jnp.where(hard_neg, d, 0.0), axis=1)
    x = d_ap - d_an + margin
    terms = jnp.where(has, jax.nn.softplus(x) if soft else jnp.maximum(x, 0.0), 0.0)
    total = jnp.sum(terms)
    if reduction == "sum":
      return total
    if reduction == "mean":
      return _safe_divide(total, jnp.sum(has))
    return _safe_divide(total, jnp.sum(jax.lax.stop_gradient(terms) > 0))

  if mining == "all":
    window = _mining.all_triplets(d, pos, neg)
  else:
    window = _mining.semihard_triplets(d, pos, neg, margin=margin)

  if soft:
    sums, counts = _tiled_soft_sums(d, window, margin)
    total = jnp.sum(sums)
    # softplus > 0 everywhere: every selected triplet is "nonzero".
    return total if reduction == "sum" else _safe_divide(total, jnp.sum(counts))

  if reduction == "mean":
    num_selected = jnp.sum(window_counts(d, window))
  hinge = _mining.restrict(window, upper=d + margin)
  count, neg_sum = _mining.window_sums(d, hinge.negative, hinge.lower, hinge.upper,
                                             [jnp.ones_like(d), d])
  per_pair = jnp.where(hinge.positive, count * (d + margin) - neg_sum, 0.0)
  total = jnp.sum(per_pair)
  if reduction == "sum":
    return total
  if reduction == "mean":
    return _safe_divide(total, num_selected)
  return _safe_divide(total, jnp.sum(jnp.where(hinge.positive, count, 0.0)))


def window_counts(distance, window: _mining.TripletWindow):
  """`[B, M]` number of selected negatives per anchor-positive pair (0 where the pair is not a selected positive)."""
  (count,) = _mining.window_sums(distance, window.negative, window.lower, window.upper,
                                       [jnp.ones_like(distance)])
  return jnp.where(window.positive, count, 0.0)


@register("triplet")
def triplet(embeddings, labels, *, valid=None, margin: float = 0.2, mining: str = "all", soft: bool = False,
            squared: bool = False, reduction: str = "mean_nonzero"):
  """Triplet loss of a `[B, D]` batch with integer labels `[B]`; see `triplet_loss`.

  `squared`: use squared Euclidean distances (FaceNet) instead of Euclidean ones (default, pytorch-metric-learning's
  `LpDistance(normalize_embeddings=False)`). Embeddings are used as given.
  """
  embeddings, labels, valid = check_embedding_inputs(embeddings, labels, valid)
  if not isinstance(squared, bool):
    raise TypeError(f"`squared` must be a bool, got {squared!r}.")
  d = pairwise.squared_euclidean(embeddings) if squared else pairwise.euclidean(embeddings)
  return triplet_loss(d, labels, query_valid=valid, margin=margin, mining=mining, soft=soft, reduction=reduction)


__all__ = ["triplet_loss", "triplet", "window_counts", "MININGS", "REDUCTIONS"]
