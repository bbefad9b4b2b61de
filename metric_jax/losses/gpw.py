"""General pair-based weighting (GPW) loss, pair form (Eq. 18) and triplet form (Eq. 21) — S1.

Pair form over the mined positive pairs P and negative pairs N of every anchor:

    L = sum_{(i,j) in P} w+_ij h(D_ij - m1)  +  sum_{(i,k) in N} w-_ik h(m2 - D_ik)

Triplet form over the mined triplets T:

    L = sum_{(i,j,k) in T} w_ijk h(D_ij - D_ik + m)

with `h(x) = [x]_+` (the paper's hinge; `hinge=True`) or `h(x) = x` (`hinge=False`, for losses whose GPW weights are
defined on every mined pair, such as multi-similarity and N-pair). The weights are computed from stopped-gradient
distances (`metric_jax.weighting`), so `dL/dD_ij = w+_ij` and `dL/dD_ik = -w-_ik`: the weights *are* the gradient.

Options (all hyperparameters are keywords):
  mining (`metric_jax.mining`): `"none"`, `"threshold"` (pos `D > pos_threshold`, neg `D < neg_threshold`),
    `"triplet_margin"` (pairs/triplets violating `D_ap - D_an + margin > 0`), `"batch_hard"`, `"semihard"`,
    `"multi_similarity"` (epsilon-mining, distance form).
  weighting (`metric_jax.weighting`): `"constant"`; `"power"` `w = [x]_+^p` (`p` for positives / triplets, `q` for
    negatives); `"exponential"` `w = exp(alpha x)` for positives / triplets, `exp(beta x)` for negatives.
  normalize: `"none"`, `"anchor"` (weights divided by `normalize_offset + sum` over the anchor's selected positives, and
    separately negatives; or over the anchor's triplets) or `"batch"` (the same over the whole batch).
  With the hinge, only items with `x > 0` are selected (the others have zero loss), and normalization runs over them.
  Square-distance variants (paper Eq. 35-37): pass squared distances (`distance="squared_euclidean"` in the registry
  form). For similarities `S` (cosine), use `D = -S` and thresholds `m = -lambda` (`distance="negative_cosine"`).

Reductions: `"sum"`; `"mean"` (divided by the number of selected pairs / triplets); `"anchor_mean"` (divided by the
number of valid query rows, as multi-similarity, lifted structure and N-pair average over anchors).

Memory: the triplet form never builds `[B, M, M]`: constant and exponential weights are separable
(`exp(alpha (D_ij - D_ik + m)) = exp(alpha (D_ij + m)) exp(-alpha D_ik)`), so each anchor-positive pair reads its sums off
per-anchor sorted negatives with prefix sums (`mining.window_sums`); power weights are tiled over anchors.

References:
  Liu, Cheng, et al., "A general pair-based weighting loss for deep metric learning", arXiv:1905.12837.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import _checks, labels as _labels, mining as _mining, pairwise, weighting as _weighting
from metric_jax.losses._registry import check_embedding_inputs, register

REDUCTIONS = ("mean", "anchor_mean", "sum")
DISTANCES = ("euclidean", "squared_euclidean", "negative_cosine")


def _safe_divide(num, den):
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def _check_common(mining, weighting, normalize, reduction, hinge, normalize_offset, powers, scales):
  _checks.check_choice(mining, "mining", _mining.PAIR_MINERS)
  _checks.check_choice(weighting, "weighting", _weighting.WEIGHTINGS)
  _checks.check_choice(normalize, "normalize", _weighting.NORMALIZATIONS)
  _checks.check_choice(reduction, "reduction", REDUCTIONS)
  if not isinstance(hinge, bool):
    raise TypeError(f"`hinge` must be a bool, got {hinge!r}.")
  _checks.check_positive(normalize_offset, "normalize_offset", strict=False)
  for name, value in powers:
    _checks.check_positive(value, name, strict=False)
  for name, value in scales:
    _checks.check_positive(value, name)


def _reduce(total, reduction, num_selected, query_valid_count):
  if reduction == "sum":
    return total
  if reduction == "mean":
    return _safe_divide(total, num_selected)
  return _safe_divide(total, query_valid_count)


def gpw_pair_loss(distance, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                  pos_margin: float = 0.0, neg_margin: float = 1.0, mining: str = "none", margin: float = 0.2,
                  epsilon: float = 0.1, weighting: str = "constant", p: float = 1.0, q: float = 1.0,
                  alpha: float = 2.0, beta: float = 50.0, normalize: str = "none", normalize_offset: float = 0.0,
                  hinge: bool = True, reduction: str = "mean"):
  """GPW pair form (Eq. 18) on a `[B, M]` distance matrix; see the module docstring.

  Args:
    distance: `[B, M]` distances `D` (or `-S` for similarities; squared distances for the Eq. 35-37 variants).
    query_labels: integer `[B]`; key_labels: integer `[M]` or None (keys = queries).
    query_valid, key_valid: optional boolean `[B]` / `[M]` padding masks.
    self_offset: see `metric_jax.labels`.
    pos_margin: `m1` (default 0); also the threshold of `mining="threshold"`.
    neg_margin: `m2 >= m1` (default 1); also the threshold of `mining="threshold"`.
    mining: pair miner name (`metric_jax.mining.PAIR_MINERS`).
    margin: triplet margin of the `"triplet_margin"` / `"semihard"` miners (default 0.2).
    epsilon: epsilon of `"multi_similarity"` mining (paper default 0.1).
    weighting: `"constant"`, `"power"` or `"exponential"`.
    p, q: powers for positive / negative pairs (default 1).
    alpha, beta: exponential scales for positive / negative pairs (multi-similarity's defaults 2 and 50).
    normalize: `"none"`, `"anchor"` or `"batch"`.
    normalize_offset: constant added to every normalization denominator (1 gives multi-similarity's "1 +").
    hinge: `[x]_+` (True, Eq. 18) or the linear term `x` on the mined pairs (False).
    reduction: `"mean"`, `"anchor_mean"` or `"sum"`.

  Returns:
    Scalar loss; 0 when nothing is selected.
  """
  d, masks = _labels.check_matrix_inputs(distance, query_labels, key_labels, query_valid, key_valid, self_offset,
                                         matrix_name="distance")
  _check_common(mining, weighting, normalize, reduction, hinge, normalize_offset, (("p", p), ("q", q)),
                (("alpha", alpha), ("beta", beta)))
  if isinstance(pos_margin, (int, float)) and isinstance(neg_margin, (int, float)) and pos_margin > neg_margin:
    raise ValueError(f"`pos_margin` (m1={pos_margin}) must not exceed `neg_margin` (m2={neg_margin}).")
  pos, neg = _mining.mine_pairs(mining, d, masks.positive, masks.negative, pos_threshold=pos_margin,
                                neg_threshold=neg_margin, margin=margin, epsilon=epsilon)
  x_pos = d - pos_margin
  x_neg = neg_margin - d
  if hinge:
    pos = pos & (jax.lax.stop_gradient(x_pos) > 0)
    neg = neg & (jax.lax.stop_gradient(x_neg) > 0)
  w_pos = _weighting.pair_weights(weighting, x_pos, pos, exponent=p, scale=alpha, normalization=normalize,
                                  offset=normalize_offset)
  w_neg = _weighting.pair_weights(weighting, x_neg, neg, exponent=q, scale=beta, normalization=normalize,
                                  offset=normalize_offset)
  total = jnp.sum(jnp.where(pos, w_pos * x_pos, 0.0)) + jnp.sum(jnp.where(neg, w_neg * x_neg, 0.0))
  num_queries = jnp.sum(_checks.check_valid(query_valid, d.shape[0], "query_valid"))
  return _reduce(total, reduction, jnp.sum(pos) + jnp.sum(neg), num_queries)


def _combine(num, weight_mass, log_scale, normalize, offset):
  """`sum_k e^{s_k} num_k`, optionally divided per row / globally by `offset + sum_k e^{s_k} W_k`, in log space.

  `num`, `weight_mass`, `log_scale`: `[B, K]` (items k of anchor b carry weights scaled by `e^{-s_k}`); items with
  `log_scale = -inf` are empty.
  """
  log_scale = jax.lax.stop_gradient(log_scale)
  weight_mass = jax.lax.stop_gradient(weight_mass)
  if normalize == "none":
    scale = jnp.where(jnp.isfinite(log_scale), jnp.exp(jnp.where(jnp.isfinite(log_scale), log_scale, 0.0)), 0.0)
    return jnp.sum(scale * num)
  axis = 1 if normalize == "anchor" else None
  peak = jnp.max(log_scale, axis=axis, keepdims=True)
  if offset > 0:
    peak = jnp.maximum(peak, 0.0)
  peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
  rel = jnp.where(jnp.isfinite(log_scale), jnp.exp(jnp.where(jnp.isfinite(log_scale), log_scale, 0.0) - peak), 0.0)
  denom = offset * jnp.exp(-peak) + jnp.sum(rel * weight_mass, axis=axis, keepdims=True)
  factor = jnp.where(denom > 0, rel / jnp.where(denom > 0, denom, 1.0), 0.0)
  return jnp.sum(factor * num)


def _tiled_triplet_sums(d, window, margin, hinge, weighting, p, alpha, batch_size: int = 8):
  """Per anchor: `num = sum w e^{-s} h(x)`, `W = sum w e^{-s}` and the shift `s`, over the window; `[M, M]` per step."""

  def one_anchor(args):
    row, pos, neg, lo, hi = args
    inside = pos[:, None] & neg[None, :] & (row[None, :] > lo[:, None]) & (row[None, :] < hi[:, None])
    x = jnp.where(inside, row[:, None] - row[None, :] + margin, 0.0)
    xs = jax.lax.stop_gradient(x)
    if weighting == "constant":
      w, shift = jnp.ones_like(x), jnp.zeros(())
    elif weighting == "power":
      w, shift = jnp.power(jnp.maximum(xs, 0.0), p), jnp.zeros(())
    else:
      z = jnp.where(inside, alpha * xs, -jnp.inf)
      shift = jnp.max(z)
      shift = jnp.where(jnp.isfinite(shift), shift, -jnp.inf)
      w = jnp.where(inside, jnp.exp(z - jnp.where(jnp.isfinite(shift), shift, 0.0)), 0.0)
    w = jnp.where(inside, jax.lax.stop_gradient(w), 0.0)
    h = jnp.maximum(x, 0.0) if hinge else x
    empty = ~jnp.any(inside)
    shift = jnp.where(empty, -jnp.inf, shift)
    return jnp.sum(w * h), jnp.sum(w), shift, jnp.sum(inside)

  return jax.lax.map(one_anchor, (d, window.positive, window.negative, window.lower, window.upper),
                     batch_size=batch_size)


def gpw_triplet_loss(distance, query_labels, key_labels=None, *, query_valid=None, key_valid=None,
                     self_offset="auto", margin: float = 0.2, mining: str = "none", pos_threshold: float = 0.0,
                     neg_threshold: float = 1.0, epsilon: float = 0.1, weighting: str = "constant", p: float = 1.0,
                     alpha: float = 2.0, normalize: str = "none", normalize_offset: float = 0.0, hinge: bool = True,
                     reduction: str = "mean", method: str = "auto"):
  """GPW triplet form (Eq. 21) `sum_T w_ijk h(D_ij - D_ik + m)` on a `[B, M]` distance matrix; see module docstring.

  Args:
    distance: `[B, M]` distances (or `-S`; squared distances for the square-distance variant).
    query_labels, key_labels, query_valid, key_valid, self_offset: as in `gpw_pair_loss`.
    margin: triplet margin `m` (default 0.2); also the margin of the `"triplet_margin"` / `"semihard"` miners.
    mining: `metric_jax.mining.TRIPLET_MINERS` (`"threshold"` / `"multi_similarity"` keep the triplets whose two pairs
      are both kept by that pair miner, with `pos_threshold` / `neg_threshold` / `epsilon`).
    weighting: `"constant"`, `"power"` (`[x]_+^p`) or `"exponential"` (`exp(alpha x)`).
    p: power (default 1). alpha: exponential scale (default 2).
    normalize: `"none"`, `"anchor"` (over each anchor's selected triplets) or `"batch"`.
    normalize_offset: constant added to the normalization denominators (1 gives N-pair's "1 +").
    hinge: `[x]_+` (True) or `x` (False).
    reduction: `"mean"`, `"anchor_mean"` or `"sum"`.
    method: `"auto"` (prefix sums for constant / exponential weights, tiles for power), `"sorted"` or `"tiled"`.

  Returns:
    Scalar loss; 0 when no triplet is selected.
  """
  d, masks = _labels.check_matrix_inputs(distance, query_labels, key_labels, query_valid, key_valid, self_offset,
                                         matrix_name="distance")
  _check_common(mining, weighting, normalize, reduction, hinge, normalize_offset, (("p", p),), (("alpha", alpha),))
  _checks.check_choice(mining, "mining", _mining.TRIPLET_MINERS)
  _checks.check_choice(method, "method", ("auto", "sorted", "tiled"))
  if method == "sorted" and weighting == "power":
    raise ValueError("`method='sorted'` needs separable weights (`weighting` 'constant' or 'exponential').")
  window = _mining.mine_triplets(mining, d, masks.positive, masks.negative, pos_threshold=pos_threshold,
                                 neg_threshold=neg_threshold, margin=margin, epsilon=epsilon)
  if hinge:
    window = _mining.restrict(window, upper=jax.lax.stop_gradient(d) + margin)
  num_queries = jnp.sum(_checks.check_valid(query_valid, d.shape[0], "query_valid"))

  if method == "tiled" or (method == "auto" and weighting == "power"):
    num, mass, shift, count = _tiled_triplet_sums(d, window, margin, hinge, weighting, p, alpha)
    total = _combine(num[:, None], mass[:, None], shift[:, None], normalize, normalize_offset)
    return _reduce(total, reduction, jnp.sum(count), num_queries)

  ds = jax.lax.stop_gradient(d)
  if weighting == "constant":
    count, neg_sum = _mining.window_sums(d, window.negative, window.lower, window.upper, [jnp.ones_like(d), d])
    log_scale = jnp.zeros_like(d)
    mass = count
  else:
    # exp(alpha (D_ap + m - D_an)) = exp(alpha (D_ap + m - c_a)) * exp(-alpha (D_an - c_a)), c_a = min_n D_an.
    c = jnp.min(jnp.where(window.negative, ds, jnp.inf), axis=1, keepdims=True)
    c = jnp.where(jnp.isfinite(c), c, 0.0)
    u = jnp.where(window.negative, jnp.exp(-alpha * (jnp.where(window.negative, ds, c) - c)), 0.0)
    count, mass, neg_sum = _mining.window_sums(d, window.negative, window.lower, window.upper,
                                               [jnp.ones_like(d), u, u * d])
    log_scale = alpha * (ds + margin - c)
  selected = window.positive & (count > 0)
  log_scale = jnp.where(selected, log_scale, -jnp.inf)
  num = jnp.where(selected, (d + margin) * mass - neg_sum, 0.0)
  total = _combine(num, jnp.where(selected, mass, 0.0), log_scale, normalize, normalize_offset)
  return _reduce(total, reduction, jnp.sum(jnp.where(selected, count, 0.0)), num_queries)


def _distance(embeddings, distance):
  _checks.check_choice(distance, "distance", DISTANCES)
  if distance == "negative_cosine":
    return -pairwise.cosine_similarity(embeddings)
  return pairwise.get(distance)(embeddings)


@register("gpw_pair")
def gpw_pair(embeddings, labels, *, valid=None, distance: str = "euclidean", **hparams):
  """GPW pair form of a `[B, D]` batch; `distance` in `DISTANCES` (`"squared_euclidean"`: Eq. 35-37 variants,
  `"negative_cosine"`: `D = -cos`). Other hyperparameters: `gpw_pair_loss`."""
  embeddings, labels, valid = check_embedding_inputs(embeddings, labels, valid)
  return gpw_pair_loss(_distance(embeddings, distance), labels, query_valid=valid, **hparams)


@register("gpw_triplet")
def gpw_triplet(embeddings, labels, *, valid=None, distance: str = "euclidean", **hparams):
  """GPW triplet form of a `[B, D]` batch; `distance` as in `gpw_pair`. Other hyperparameters: `gpw_triplet_loss`."""
  embeddings, labels, valid = check_embedding_inputs(embeddings, labels, valid)
  return gpw_triplet_loss(_distance(embeddings, distance), labels, query_valid=valid, **hparams)


__all__ = ["gpw_pair_loss", "gpw_triplet_loss", "gpw_pair", "gpw_triplet", "REDUCTIONS", "DISTANCES"]
