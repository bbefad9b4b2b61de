"""General pair-based weighting (GPW) loss, pair form (Eq. 18) and triplet form (Eq. 21) — S1.

Pair form over the mined positive pairs P and negative pairs N of every anchor:

    L = sum_{(i,j) in P} w+_ij h(D_ij - m1)  +  sum_{(i,k) in N} w-_ik h(m2 - D_ik)

Triplet form over the mined triplets T:

    L = sum_{(i,j,k) in T} w_ijk h(D_ij - D_ik + m)

with `h(x) = [x]_+` (the paper's hinge; `hinge=True`) or `h(x) = x` (`hinge=False`, for losses whose GPW weights are
defined on every mined pair, such as multi-similarity and N-pair). The paper defines the loss by its gradient: the
weights are constants (stop-gradient) and `dL/dD_ij = w+_ij`, `dL/dD_ik = -w-_ik`, `dL/dD_ij = w_ijk`. We return as the
value the *potential* whose exact gradient is those weights (`metric_jax.weighting` gives the same weights directly),
so the value, its finite differences and its autodiff gradient agree:

    constant      sum x                       (contrastive / triplet; exactly Eq. 18 / 21 with w = 1)
    power         sum [x]_+^(p+1) / (p+1)     (w = [x]_+^p)
    exponential   sum (e^{alpha x} - 1)/alpha (w = e^{alpha x}; exponent capped at `weighting.MAX_EXPONENT`)

and, normalized over a group (an anchor's positives, its negatives, its triplets, or the whole batch) with offset c,

    constant      sum x / (c + n)                          (w = 1 / (c + n))
    exponential   log(c + sum e^{alpha x}) / alpha         (w = e^{alpha x} / (c + sum e^{alpha x}): lifted structure,
                                                            multi-similarity, N-pair; their exact loss values)
    power         (c + sum [x]_+^(p+1))^(1/(p+1)) - c^(1/(p+1))
                  (w = [x]_+^p / (c + sum [x]_+^(p+1))^(p/(p+1)): power weights normalized by the (p+1)-norm of the
                   violations; the ratio [x]^p / sum [x]^p is not the gradient of any function, so it has no loss)

Options (all hyperparameters are keywords):
  mining (`metric_jax.mining`): `"none"`, `"threshold"` (pos `D > pos_threshold`, neg `D < neg_threshold`),
    `"triplet_margin"` (pairs/triplets violating `D_ap - D_an + margin > 0`), `"batch_hard"`, `"semihard"`,
    `"multi_similarity"` (epsilon-mining, distance form).
  weighting (`metric_jax.weighting`): `"constant"`; `"power"` `w = [x]_+^p` (`p` for positives / triplets, `q` for
    negatives); `"exponential"` `w = exp(alpha x)` for positives / triplets, `exp(beta x)` for negatives.
  normalize: `"none"` (or False), `"anchor"` (or True; per anchor: its positives and its negatives separately, or its
    triplets) or `"batch"` (over the whole batch), with offset `normalize_offset`.
  With the hinge, only items with `x > 0` are selected (the others have zero loss), and normalization runs over them.
  Square-distance variants (paper Eq. 35-37): pass squared distances (`distance="squared_euclidean"` in the registry
  form). For similarities `S` (cosine), use `D = -S` and thresholds `m = -lambda` (`distance="negative_cosine"`).

Reductions: `"sum"`; `"mean"` (divided by the number of selected pairs / triplets); `"anchor_mean"` (divided by the
number of valid query rows, as multi-similarity, lifted structure and N-pair average over anchors).

Memory: the triplet form never builds `[B, M, M]`. When no anchor has more than `positive_slots` (S) selected
positives (PK batches), the triplets are laid out densely as anchor x positive slot x key, `[B, S, M]`, for every
weighting, with no sort. Otherwise (chosen at run time by `lax.cond`, exact either way): constant and exponential
weights are separable (`exp(alpha (D_ij - D_ik + m)) = exp(alpha (D_ij + m)) exp(-alpha D_ik)`), so each
anchor-positive pair reads its sums from per-anchor sorted negatives with prefix sums (`mining.window_sums`); power
weights are tiled over anchors (recomputed in the backward pass, so residuals stay `[B, M]`).

References:
  Liu, Cheng, et al., "A general pair-based weighting loss for deep metric learning", arXiv:1905.12837.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from metric_jax import _checks, mining as _mining, pairwise, weighting as _weighting
from metric_jax.losses import _metric, _shard
from metric_jax.losses._registry import register

REDUCTIONS = ("mean", "anchor_mean", "sum")
DEFAULT_POSITIVE_SLOTS = 8  # as `metric_jax.losses.triplet.DEFAULT_POSITIVE_SLOTS`
DISTANCES = _metric.DISTANCES + ("negative_cosine",)   # "cosine" is 1 - cos; "negative_cosine" is -cos (D = -S)


def _safe_divide(num, den):
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def _normalization(normalize):
  """`normalize` as a name; `True` means `"anchor"` and `False` means `"none"`."""
  if isinstance(normalize, bool):
    return "anchor" if normalize else "none"
  return normalize


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


class _Stats(NamedTuple):
  """Per-group (anchor row) statistics of the selected violations `x`, each `[R]`."""
  count: jnp.ndarray     # number of selected items
  sum_x: jnp.ndarray     # sum x                        (constant weights)
  sum_pow: jnp.ndarray   # sum [x]_+^(p+1)              (power weights)
  sum_exp: jnp.ndarray   # sum (e^{alpha x} - 1)/alpha  (exponential weights, unnormalized, exponent capped)
  lse: jnp.ndarray       # log sum e^{alpha x}, -inf when empty (exponential weights, normalized)


def _safe_pow(x, e):
  """`x^e` for `x >= 0` with finite gradients at 0 (for any `e > 0`)."""
  positive = x > 0
  return jnp.where(positive, jnp.power(jnp.where(positive, x, 1.0), e), 0.0)


def _element_stats(x, mask, weighting, p, alpha, axis=1):
  count = jnp.sum(mask, axis=axis).astype(x.dtype)
  zeros = jnp.zeros_like(count)
  sum_x, sum_pow, sum_exp, lse = zeros, zeros, zeros, jnp.full_like(count, -jnp.inf)
  if weighting == "constant":
    sum_x = jnp.sum(jnp.where(mask, x, 0.0), axis=axis)
  elif weighting == "power":
    sum_pow = jnp.sum(jnp.where(mask, _safe_pow(jnp.maximum(x, 0.0), p + 1.0), 0.0), axis=axis)
  else:
    z = jnp.where(mask, alpha * x, -jnp.inf)
    sum_exp = jnp.sum(jnp.where(mask, jnp.exp(jnp.minimum(jnp.where(mask, alpha * x, 0.0),
                                                          _weighting.MAX_EXPONENT)) - 1.0, 0.0), axis=axis) / alpha
    lse = _masked_logsumexp(z, mask, axis=axis)
  return _Stats(count, sum_x, sum_pow, sum_exp, lse)


def _masked_logsumexp(z, mask, axis):
  """`log sum_mask e^z` along `axis`; `-inf` (with zero gradient) where nothing is selected."""
  has = jnp.any(mask, axis=axis)
  peak = jax.lax.stop_gradient(jnp.max(jnp.where(mask, z, -jnp.inf), axis=axis, keepdims=True))
  peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
  total = jnp.sum(jnp.where(mask, jnp.exp(jnp.where(mask, z, 0.0) - peak), 0.0), axis=axis)
  out = jnp.log(jnp.where(has, total, 1.0)) + jnp.squeeze(peak, axis)
  return jnp.where(has, out, -jnp.inf)


def _potential(stats: _Stats, weighting, normalize, p, alpha, offset, axis_name=None):
  """The GPW potential: a scalar whose gradient with respect to each selected `x` is that item's GPW weight.

    none:        constant  sum x;   power  sum [x]_+^(p+1) / (p+1);   exponential  sum (e^{alpha x} - 1) / alpha
    per group:   constant  sum x / (c + n);   power  (c + sum [x]_+^(p+1))^(1/(p+1)) - c^(1/(p+1));
                 exponential  log(c + sum e^{alpha x}) / alpha  (0 for an empty group with c = 0)

  `stats` holds one entry per anchor (this device's rows); the groups of `normalize="batch"` and the sums over anchors
  run over every device of `axis_name`.
  """
  if normalize == "batch":
    has = jnp.isfinite(stats.lse)
    shift, total = _shard.block_logsumexp(jnp.where(has, stats.lse, 0.0), has, axis=0)
    lse, nonempty = _shard.combine_logsumexp(shift[None], total[None], axis_name)
    totals = _shard.psum((jnp.sum(stats.count), jnp.sum(stats.sum_x), jnp.sum(stats.sum_pow),
                          jnp.sum(stats.sum_exp)), axis_name)
    stats = _Stats(*(t[None] for t in totals), jnp.where(nonempty, lse, -jnp.inf)[None])
    return _group_potential(stats, weighting, normalize, p, alpha, offset)
  return _shard.psum(_group_potential(stats, weighting, normalize, p, alpha, offset), axis_name)


def _group_potential(stats: _Stats, weighting, normalize, p, alpha, offset):
  """`_potential` summed over the groups of `stats` (one per entry)."""
  if normalize == "none":
    if weighting == "constant":
      return jnp.sum(stats.sum_x)
    if weighting == "power":
      return jnp.sum(stats.sum_pow) / (p + 1.0)
    return jnp.sum(stats.sum_exp)
  if weighting == "constant":
    return jnp.sum(_safe_divide(stats.sum_x, offset + stats.count))
  if weighting == "power":
    root = 1.0 / (p + 1.0)
    return jnp.sum(_safe_pow(offset + stats.sum_pow, root) - (offset ** root if offset > 0 else 0.0))
  has = jnp.isfinite(stats.lse)
  lse = jnp.where(has, stats.lse, 0.0)
  if offset > 0:
    value = jnp.logaddexp(jnp.log(offset), jnp.where(has, lse, -jnp.inf))
  else:
    value = jnp.where(has, lse, 0.0)
  return jnp.sum(value) / alpha


def gpw_pair_loss(distance, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                  pos_margin: float = 0.0, neg_margin: float = 1.0, mining: str = "none", margin: float = 0.2,
                  epsilon: float = 0.1, weighting: str = "constant", p: float = 1.0, q: float = 1.0,
                  alpha: float = 2.0, beta: float = 50.0, normalize="none", normalize_offset: float = 0.0,
                  hinge: bool = True, reduction: str = "mean", axis_name=None, block_size=None):
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
    normalize: `"none"` (or False), `"anchor"` (or True) or `"batch"`.
    normalize_offset: constant `c` added to every normalization denominator (1 gives multi-similarity's "1 +").
    hinge: `[x]_+` (True, Eq. 18) or the linear term `x` on the mined pairs (False).
    reduction: `"mean"`, `"anchor_mean"` or `"sum"`.
    axis_name, block_size: rows (anchors) sharded over a `shard_map` axis / evaluated in blocks (see
      `metric_jax.losses.contrastive.contrastive_loss` and `metric_jax.losses._shard`); `normalize="batch"` and the
      reductions combine the per-anchor statistics of every block and device.

  Returns:
    Scalar loss; 0 when nothing is selected.
  """
  problem = _shard.from_matrix(distance, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size, matrix_name="distance")
  return _gpw_pair(problem, pos_margin=pos_margin, neg_margin=neg_margin, mining=mining, margin=margin,
                   epsilon=epsilon, weighting=weighting, p=p, q=q, alpha=alpha, beta=beta, normalize=normalize,
                   normalize_offset=normalize_offset, hinge=hinge, reduction=reduction)


def _check_pair(pos_margin, neg_margin, mining, weighting, p, q, alpha, beta, normalize, normalize_offset, hinge,
                reduction):
  normalize = _normalization(normalize)
  _check_common(mining, weighting, normalize, reduction, hinge, normalize_offset, (("p", p), ("q", q)),
                (("alpha", alpha), ("beta", beta)))
  if isinstance(pos_margin, (int, float)) and isinstance(neg_margin, (int, float)) and pos_margin > neg_margin:
    raise ValueError(f"`pos_margin` (m1={pos_margin}) must not exceed `neg_margin` (m2={neg_margin}).")
  return normalize


def _gpw_pair(problem, *, pos_margin=0.0, neg_margin=1.0, mining="none", margin=0.2, epsilon=0.1,
              weighting="constant", p=1.0, q=1.0, alpha=2.0, beta=50.0, normalize="none", normalize_offset=0.0,
              hinge=True, reduction="mean"):
  normalize = _check_pair(pos_margin, neg_margin, mining, weighting, p, q, alpha, beta, normalize, normalize_offset,
                          hinge, reduction)

  def block(rows, extras, consts):
    d = rows.matrix
    pos, neg = _mining.mine_pairs(mining, d, rows.positive, rows.negative, pos_threshold=pos_margin,
                                  neg_threshold=neg_margin, margin=margin, epsilon=epsilon)
    x_pos = d - pos_margin
    x_neg = neg_margin - d
    if hinge:
      pos = pos & (jax.lax.stop_gradient(x_pos) > 0)
      neg = neg & (jax.lax.stop_gradient(x_neg) > 0)
    stats = (_element_stats(x_pos, pos, weighting, p, alpha), _element_stats(x_neg, neg, weighting, q, beta))
    return stats, (jnp.sum(pos) + jnp.sum(neg)).astype(d.dtype)

  (pos_stats, neg_stats), counts, alarm = problem.map(block)
  total = (_potential(pos_stats, weighting, normalize, p, alpha, normalize_offset, problem.axis_name)
           + _potential(neg_stats, weighting, normalize, q, beta, normalize_offset, problem.axis_name))
  return (_reduce(total, reduction, problem.sum_blocks(counts), problem.num_valid_queries()) + alarm
          + problem.alarm)


def _tiled_triplet_stats(d, window, margin, weighting, p, alpha, batch_size: int = 8) -> _Stats:
  """Per-anchor `_Stats` of the triplets in a window, one `[M, M]` tile (positives x negatives) per anchor."""

  @jax.checkpoint  # recompute the tile in the backward pass: residuals stay `[B, M]`, not `[B, M, M]`
  def one_anchor(args):
    row, pos, neg, lo, hi = args
    inside = pos[:, None] & neg[None, :] & (row[None, :] > lo[:, None]) & (row[None, :] < hi[:, None])
    x = row[:, None] - row[None, :] + margin
    return _element_stats(x.reshape(-1), inside.reshape(-1), weighting, p, alpha, axis=0)

  return jax.lax.map(one_anchor, (d, window.positive, window.negative, window.lower, window.upper),
                     batch_size=batch_size)


def _slot_triplet_stats(d, window, margin, weighting, p, alpha, num_slots: int, candidates=None) -> _Stats:
  """Per-anchor `_Stats` over the dense `[B, S, M]` positive-slot layout (`mining.slot_triplets`): no sort, `O(B S M)`,
  any weighting. Exact when no anchor has more than `num_slots` selected positives. `candidates`: optional
  `mining.label_candidates` for `mining.positive_slots`."""
  if weighting == "constant":
    # sum_{s,n} (D_as + m - D_an) = sum_s c_as (D_as + m) - sum_n c_an D_an with counts c_as = #n, c_an = #s, taken
    # slot by slot as `[B, M]` passes (a `scan`: on CPU, XLA runs `S` fused row reductions far slower than a loop).
    index, valid = _mining.positive_slots(window.positive, num_slots, candidates)
    d_ap = jnp.take_along_axis(d, index, axis=1)                                  # [B, S]
    ds = jax.lax.stop_gradient(d)
    lower = jnp.take_along_axis(jax.lax.stop_gradient(window.lower), index, axis=1)
    upper = jnp.where(valid, jnp.take_along_axis(jax.lax.stop_gradient(window.upper), index, axis=1), -jnp.inf)

    def slot_pass(per_negative, column):
      lo, up = (c[:, None] for c in column)
      inside = (window.negative & (ds > lo) & (ds < up)).astype(d.dtype)
      return per_negative + inside, jnp.sum(inside, axis=1)

    per_negative, per_positive = _mining.scan_slots(slot_pass, jnp.zeros_like(ds), (lower.T, upper.T),
                                                    jnp.any(valid, axis=0))
    per_positive = per_positive.T                                                 # [B, S]
    sum_x = jnp.sum(per_positive * (d_ap + margin), axis=1) - jnp.sum(per_negative * d, axis=1)
    zeros = jnp.zeros_like(d[:, 0])
    return _Stats(jnp.sum(per_positive, axis=1), sum_x, zeros, zeros, jnp.full_like(zeros, -jnp.inf))
  slots = _mining.slot_triplets(d, window, num_slots, candidates)
  d_ap = jnp.take_along_axis(d, slots.index, axis=1)                              # [B, S]
  x = d_ap[:, :, None] - d[:, None, :] + margin                                    # [B, S, M]
  batch = d.shape[0]
  return _element_stats(x.reshape(batch, -1), slots.inside.reshape(batch, -1), weighting, p, alpha, axis=1)


def _differentiable_fields(weighting, normalize):
  """The `_Stats` fields that `_potential` differentiates for this weighting / normalization."""
  if weighting == "constant":
    return ("sum_x",)
  if weighting == "power":
    return ("sum_pow",)
  return ("sum_exp",) if normalize == "none" else ("lse",)


def _with_row_gradients(stats_fn, fields):
  """`d -> (stats_fn(d), gradients)`: for each field, `[B, M]` with row a the gradient of `field[a]` w.r.t. `d[a]`
  (one VJP with a cotangent of ones, exact because `field[a]` depends on row a of `d` only)."""

  def run(d):
    stats, vjp = jax.vjp(stats_fn, d)
    grads = []
    for field in fields:
      cotangent = _Stats(*(jnp.ones_like(v) if name == field else jnp.zeros_like(v)
                           for name, v in zip(_Stats._fields, stats)))
      grads.append(vjp(cotangent)[0])
    return stats, tuple(grads)

  return run


def _sorted_triplet_stats(d, window, margin, weighting, alpha) -> _Stats:
  """Per-anchor `_Stats` from prefix sums over each anchor's sorted negatives (constant / exponential weights)."""
  if weighting == "constant":
    count, neg_sum = _mining.window_sums(d, window.negative, window.lower, window.upper, [jnp.ones_like(d), d])
    count = jnp.where(window.positive, count, 0.0)
    sum_x = jnp.where(window.positive, count * (d + margin) - neg_sum, 0.0)
    zeros = jnp.zeros_like(d[:, 0])
    return _Stats(jnp.sum(count, axis=1), jnp.sum(sum_x, axis=1), zeros, zeros, jnp.full_like(zeros, -jnp.inf))
  # sum_n e^{alpha (D_ap + m - D_an)} = e^{alpha (D_ap + m - c_a)} * sum_n e^{-alpha (D_an - c_a)}, c_a = min_n D_an.
  ds = jax.lax.stop_gradient(d)
  c = jnp.min(jnp.where(window.negative, ds, jnp.inf), axis=1, keepdims=True)
  c = jnp.where(jnp.isfinite(c), c, 0.0)
  u = jnp.where(window.negative, jnp.exp(-alpha * (jnp.where(window.negative, d, c) - c)), 0.0)
  count, mass = _mining.window_sums(d, window.negative, window.lower, window.upper, [jnp.ones_like(d), u])
  # `mass` can underflow to 0 when every negative of the window is more than ~87/alpha (float32) farther than the
  # anchor's closest negative; such an anchor-positive pair is then dropped (its weight is negligible only relative
  # to the anchor's other pairs). The tiled method is exact there.
  has = window.positive & (count > 0) & (mass > 0)
  log_item = jnp.where(has, alpha * (d + margin - c) + jnp.log(jnp.where(has, mass, 1.0)), -jnp.inf)
  capped = jnp.minimum(jnp.where(has, log_item, 0.0), _weighting.MAX_EXPONENT)
  sum_exp = jnp.where(has, (jnp.exp(capped) - count) / alpha, 0.0)
  count = jnp.where(has, count, 0.0)
  zeros = jnp.zeros_like(d[:, 0])
  return _Stats(jnp.sum(count, axis=1), zeros, zeros, jnp.sum(sum_exp, axis=1),
                _masked_logsumexp(log_item, has, axis=1))


def gpw_triplet_loss(distance, query_labels, key_labels=None, *, query_valid=None, key_valid=None,
                     self_offset="auto", margin: float = 0.2, mining: str = "none", pos_threshold: float = 0.0,
                     neg_threshold: float = 1.0, epsilon: float = 0.1, weighting: str = "constant", p: float = 1.0,
                     alpha: float = 2.0, normalize="none", normalize_offset: float = 0.0, hinge: bool = True,
                     reduction: str = "mean", method: str = "auto",
                     positive_slots: Optional[int] = DEFAULT_POSITIVE_SLOTS, axis_name=None, block_size=None):
  """GPW triplet form (Eq. 21), weights `w_ijk` on `x = D_ij - D_ik + m`, on a `[B, M]` distance matrix.

  Args:
    distance: `[B, M]` distances (or `-S`; squared distances for the square-distance variant).
    query_labels, key_labels, query_valid, key_valid, self_offset: as in `gpw_pair_loss`.
    margin: triplet margin `m` (default 0.2); also the margin of the `"triplet_margin"` / `"semihard"` miners.
    mining: `metric_jax.mining.TRIPLET_MINERS` (`"threshold"` / `"multi_similarity"` keep the triplets whose two pairs
      are both kept by that pair miner, with `pos_threshold` / `neg_threshold` / `epsilon`).
    weighting: `"constant"`, `"power"` (`[x]_+^p`) or `"exponential"` (`exp(alpha x)`).
    p: power (default 1). alpha: exponential scale (default 2).
    normalize: `"none"` (or False), `"anchor"` (or True; over each anchor's selected triplets) or `"batch"`.
    normalize_offset: constant added to the normalization denominators (1 gives N-pair's "1 +").
    hinge: `[x]_+` (True) or `x` (False).
    reduction: `"mean"`, `"anchor_mean"` or `"sum"`.
    method: `"auto"`, `"sorted"` (prefix sums over sorted negatives; constant / exponential weights) or `"tiled"`
      (one `[M, M]` tile per anchor). `"auto"` uses the dense positive-slot layout (`[B, S, M]`, no sort, every
      weighting) when no anchor has more than `positive_slots` selected positives (checked at run time with
      `lax.cond`), and otherwise `"sorted"` for constant / exponential weights and `"tiled"` for power weights;
      `"auto"` gives exact first derivatives but no second-order terms (choose `"sorted"` or `"tiled"` for those).
    positive_slots: static bound `S` of the slot layout of `method="auto"` (default `DEFAULT_POSITIVE_SLOTS`; PK
      batches with up to `S + 1` samples per class); 0 or None disables it.
    axis_name, block_size: rows (anchors) sharded over a `shard_map` axis / evaluated in blocks (see
      `gpw_pair_loss`); each block picks its layout (`method="auto"`).

  Returns:
    Scalar loss; 0 when no triplet is selected.
  """
  problem = _shard.from_matrix(distance, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size, matrix_name="distance")
  return _gpw_triplet(problem, margin=margin, mining=mining, pos_threshold=pos_threshold, neg_threshold=neg_threshold,
                      epsilon=epsilon, weighting=weighting, p=p, alpha=alpha, normalize=normalize,
                      normalize_offset=normalize_offset, hinge=hinge, reduction=reduction, method=method,
                      positive_slots=positive_slots)


def _check_triplet(mining, weighting, p, alpha, normalize, normalize_offset, hinge, reduction, method,
                   positive_slots):
  normalize = _normalization(normalize)
  _check_common(mining, weighting, normalize, reduction, hinge, normalize_offset, (("p", p),), (("alpha", alpha),))
  _checks.check_choice(mining, "mining", _mining.TRIPLET_MINERS)
  _checks.check_choice(method, "method", ("auto", "sorted", "tiled"))
  num_slots = _mining.check_num_slots(positive_slots)
  if method == "sorted" and weighting == "power":
    raise ValueError("`method='sorted'` needs separable weights (`weighting` 'constant' or 'exponential').")
  return normalize, num_slots


def _gpw_triplet(problem, *, margin=0.2, mining="none", pos_threshold=0.0, neg_threshold=1.0, epsilon=0.1,
                 weighting="constant", p=1.0, alpha=2.0, normalize="none", normalize_offset=0.0, hinge=True,
                 reduction="mean", method="auto", positive_slots=DEFAULT_POSITIVE_SLOTS):
  normalize, num_slots = _check_triplet(mining, weighting, p, alpha, normalize, normalize_offset, hinge, reduction,
                                        method, positive_slots)

  options = dict(margin=margin, mining=mining, pos_threshold=pos_threshold, neg_threshold=neg_threshold,
                 epsilon=epsilon, weighting=weighting, p=p, alpha=alpha, normalize=normalize, hinge=hinge,
                 method=method, num_slots=num_slots)
  if normalize == "none" and method == "auto" and num_slots:
    # The potential is then `scale * sum_a field_a`, linear in the per-anchor field: the rows give it with its
    # gradient `[B, M]` explicitly and `map_linear` turns that into embedding gradients block by block (no
    # rematerialization of the blocks).
    (field,) = _differentiable_fields(weighting, normalize)
    scale = 1.0 / (p + 1.0) if weighting == "power" else 1.0

    def linear_block(rows):
      stats, (grad,) = _triplet_stats_and_row_gradients(rows.matrix, rows.positive, rows.negative, **options,
                                                          candidates=problem.label_candidates(rows, num_slots + 1))
      return scale * jnp.sum(getattr(stats, field)), scale * grad, jnp.sum(stats.count)

    total, counts, alarm = problem.map_linear(linear_block)
    total, num_selected = problem.psum(total), problem.sum_blocks(counts)
    return _reduce(total, reduction, num_selected, problem.num_valid_queries()) + alarm + problem.alarm

  def block(rows, extras, consts):
    candidates = problem.label_candidates(rows, num_slots + 1 if num_slots else 0)
    return _triplet_stats(rows.matrix, rows.positive, rows.negative, **options, candidates=candidates), None

  stats, _, alarm = problem.map(block)
  total = _potential(stats, weighting, normalize, p, alpha, normalize_offset, problem.axis_name)
  num_selected = problem.psum(jnp.sum(stats.count))
  return _reduce(total, reduction, num_selected, problem.num_valid_queries()) + alarm + problem.alarm


def _triplet_window(d, positive, negative, *, margin, mining, pos_threshold, neg_threshold, epsilon, weighting, p,
                    alpha, hinge, method):
  """`(window, general)`: the mined triplet window of the rows of `d` and the slot-free evaluation of its statistics
  (`general(d) -> _Stats`: sorted prefix sums, or anchor tiles for power weights / `method="tiled"`)."""
  window = _mining.mine_triplets(mining, d, positive, negative, pos_threshold=pos_threshold,
                                 neg_threshold=neg_threshold, margin=margin, epsilon=epsilon)
  if hinge:
    window = _mining.restrict(window, upper=jax.lax.stop_gradient(d) + margin)
  if method == "tiled" or (method == "auto" and weighting == "power"):
    return window, lambda d: _tiled_triplet_stats(d, window, margin, weighting, p, alpha)
  return window, lambda d: _sorted_triplet_stats(d, window, margin, weighting, alpha)


def _triplet_stats(d, positive, negative, *, margin, mining, pos_threshold, neg_threshold, epsilon, weighting, p,
                   alpha, normalize, hinge, method, num_slots, candidates=None) -> _Stats:
  """Per-anchor `_Stats` of the selected triplets of the rows of a sanitized distance matrix (each anchor's from its
  own row only); `candidates`: optional `mining.label_candidates` of the rows (for the slot layout)."""
  options = dict(margin=margin, mining=mining, pos_threshold=pos_threshold, neg_threshold=neg_threshold,
                 epsilon=epsilon, weighting=weighting, p=p, alpha=alpha, hinge=hinge, method=method)
  if method == "auto" and num_slots:
    # The selection is piecewise constant in `d` and each anchor's statistics depend on its own row only, so the
    # statistics come with their row gradients (`[B, M]`, one VJP per differentiable field), without gradient, and
    # the gradient is reattached here as `sum_j J_aj (D_aj - stop_gradient(D_aj))` (value unchanged): the `cond`
    # keeps no residuals of the branch it did not take (first derivatives only, as the `triplet` loss).
    ds = jax.lax.stop_gradient(d)
    stats, row_grads = _triplet_stats_and_row_gradients(d, positive, negative, normalize=normalize,
                                                        num_slots=num_slots, candidates=candidates, **options)
    return stats._replace(**{field: getattr(stats, field) + jnp.sum(grad * (d - ds), axis=1)
                             for field, grad in zip(_differentiable_fields(weighting, normalize), row_grads)})
  _, general = _triplet_window(d, positive, negative, **options)
  return general(d)


def _triplet_stats_and_row_gradients(d, positive, negative, *, margin, mining, pos_threshold, neg_threshold, epsilon,
                                     weighting, p, alpha, normalize, hinge, method, num_slots, candidates=None):
  """The per-anchor `_Stats` (positive slots when every anchor fits, else `general`) without gradient, and the
  `[B, M]` row gradients of its differentiable fields (`_differentiable_fields`); `candidates` as in
  `_triplet_stats`."""
  ds = jax.lax.stop_gradient(d)
  window, general = _triplet_window(ds, positive, negative, margin=margin, mining=mining,
                                    pos_threshold=pos_threshold, neg_threshold=neg_threshold, epsilon=epsilon,
                                    weighting=weighting, p=p, alpha=alpha, hinge=hinge, method=method)
  fields = _differentiable_fields(weighting, normalize)
  return jax.lax.cond(
      _mining.max_positives(window, candidates) <= num_slots,
      _with_row_gradients(lambda d: _slot_triplet_stats(d, window, margin, weighting, p, alpha, num_slots,
                                                        candidates), fields),
      _with_row_gradients(general, fields), ds)


def _negative_cosine(queries, keys=None):
  return -pairwise.cosine_similarity(queries, keys)


def _distance_fn(distance):
  _checks.check_choice(distance, "distance", DISTANCES)
  if distance == "negative_cosine":
    return _negative_cosine
  return _metric.distance_fn(distance, DISTANCES)


def _check_hparams(hparams, fn, loss):
  names = [n for n in inspect.signature(fn).parameters if n != "problem"]
  unknown = sorted(set(hparams) - set(names))
  if unknown:
    raise TypeError(f"{loss}() got unexpected keyword argument(s) {unknown}; hyperparameters: {names}.")


@register("gpw_pair")
def gpw_pair(embeddings, labels, *, valid=None, distance: str = "euclidean", axis_name=None, block_size=None,
             memory=None, **hparams):
  """GPW pair form of a `[B, D]` batch; `distance` in `DISTANCES`: `"euclidean"` (default), `"squared_euclidean"`
  (Eq. 35-37 variants), `"cosine"` (`D = 1 - cos`) or `"negative_cosine"` (`D = -cos`, the paper's similarity form
  with thresholds `m = -lambda`); the cosine forms L2-normalize the embeddings inside. Other hyperparameters:
  `gpw_pair_loss`. Scale arguments (`axis_name`, `block_size`, `memory`): see
  `metric_jax.losses.contrastive.contrastive`."""
  _check_hparams(hparams, _gpw_pair, "gpw_pair")
  matrix_fn = _distance_fn(distance)
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=matrix_fn, axis_name=axis_name,
                                   block_size=block_size, memory=memory)
  return _gpw_pair(problem, **hparams)


@register("gpw_triplet")
def gpw_triplet(embeddings, labels, *, valid=None, distance: str = "euclidean", axis_name=None, block_size=None,
                memory=None, **hparams):
  """GPW triplet form of a `[B, D]` batch; `distance` as in `gpw_pair`. Other hyperparameters: `gpw_triplet_loss`.
  Scale arguments as in `gpw_pair`."""
  _check_hparams(hparams, _gpw_triplet, "gpw_triplet")
  matrix_fn = _distance_fn(distance)
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=matrix_fn, axis_name=axis_name,
                                   block_size=block_size, memory=memory)
  return _gpw_triplet(problem, **hparams)


__all__ = ["gpw_pair_loss", "gpw_triplet_loss", "gpw_pair", "gpw_triplet", "REDUCTIONS", "DISTANCES"]
