"""Triplet margin loss with all / batch-hard / semi-hard triplets, hinge or soft, without `[B, M, M]` tensors."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from metric_jax import _checks, mining as _mining
from metric_jax.losses import _metric, _shard
from metric_jax.losses._registry import register

MININGS = ("all", "hard", "semihard")
REDUCTIONS = ("mean_nonzero", "mean", "sum")
# Positive slots of the sort-free layout: PK batches with up to 9 samples per class use it (chosen by
# benchmarks/losses.py at B=1024, D=512, K=4: see the module docstring of `triplet_loss`).
DEFAULT_POSITIVE_SLOTS = 8


def _safe_divide(num, den):
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def _tiled_soft_sums(d, window: _mining.TripletWindow, margin, batch_size: int = 8):
  """Per-anchor `sum softplus(D_ap - D_an + m)` and triplet counts over a window, one `[M, M]` tile per anchor."""

  @jax.checkpoint  # recompute the tile in the backward pass: residuals stay `[B, M]`, not `[B, M, M]`
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
                 margin: float = 0.2, mining: str = "all", soft: bool = False, reduction: str = "mean_nonzero",
                 positive_slots: Optional[int] = DEFAULT_POSITIVE_SLOTS, axis_name=None, block_size=None):
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

  Complexity (`"all"` / `"semihard"`): when no anchor has more than `positive_slots` (`S`) positives, as in PK
  batches with `K <= S + 1`, the triplets are evaluated densely over anchor x positive slot x key (`[B, S, M]`,
  `mining.slot_triplets`): `O(B S M)` time and memory, no sort. Otherwise (checked at run time with `lax.cond`, so the
  result is exact for every batch) the hinge forms sort each anchor's negative distances once and use prefix sums and
  `searchsorted` (`O(B M log M)`); the soft forms (not separable) are tiled over anchors with `lax.map`, `O(M^2)`
  memory per step. Under `vmap` the `cond` becomes a `select` and both layouts run.

  Args:
    distance: `[B, M]` distances (Euclidean or squared Euclidean).
    query_labels: integer `[B]`; key_labels: integer `[M]` or None (keys = queries).
    query_valid, key_valid: optional boolean `[B]` / `[M]` padding masks.
    self_offset: see `metric_jax.labels`.
    margin: `m` (FaceNet uses 0.2 on squared distances of unit-norm embeddings).
    mining: `"all"`, `"hard"` or `"semihard"`.
    soft: softplus instead of the hinge (Hermans et al.'s soft margin, with `margin` added inside).
    reduction: one of `REDUCTIONS`.
    positive_slots: static bound `S` on the positives per anchor for the sort-free layout (default
      `DEFAULT_POSITIVE_SLOTS`); 0 or None always uses the sorted / tiled layout.
    axis_name: inside `shard_map`, the axis over which the query rows (anchors) are sharded; `block_size`: anchors in
      blocks (each block picks its layout); see `metric_jax.losses._shard`.

  Returns:
    Scalar loss.

  References:
    Weinberger & Saul, "Distance metric learning for large margin nearest neighbor classification", JMLR 2009.
    Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015.
    Hermans, Beyer, Leibe, "In defense of the triplet loss for person re-identification", arXiv:1703.07737.
  """
  problem = _shard.from_matrix(distance, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size, matrix_name="distance")
  return _triplet(problem, margin, mining, soft, reduction, positive_slots)


def _check_triplet(margin, mining, soft, reduction, positive_slots):
  _checks.check_choice(mining, "mining", MININGS)
  _checks.check_choice(reduction, "reduction", REDUCTIONS)
  _checks.check_positive(margin, "margin", strict=False)
  if not isinstance(soft, bool):
    raise TypeError(f"`soft` must be a bool, got {soft!r}.")
  return _mining.check_num_slots(positive_slots)


def _triplet(problem, margin, mining, soft, reduction, positive_slots):
  num_slots = _check_triplet(margin, mining, soft, reduction, positive_slots)

  def block(rows):
    candidates = problem.label_candidates(rows, num_slots + 1 if num_slots and mining != "hard" else 0)
    total, num_nonzero, num_selected, coef = _triplet_sums(rows.matrix, rows.positive, rows.negative, margin, mining,
                                                           soft, reduction, num_slots, candidates)
    return total, coef, tuple(jnp.asarray(x, rows.matrix.dtype) for x in (num_nonzero, num_selected))

  total, counts, alarm = problem.map_linear(block)
  total = problem.psum(total)
  num_nonzero, num_selected = problem.sum_blocks(counts)
  alarm = alarm + problem.alarm
  if reduction == "sum":
    return total + alarm
  if reduction == "mean":
    return _safe_divide(total, num_selected) + alarm
  return _safe_divide(total, num_nonzero) + alarm


def _triplet_sums(d, pos, neg, margin, mining: str, soft: bool, reduction: str, num_slots: int, candidates=None):
  """`(sum of losses, number of triplets with loss > 0, number of selected triplets, dL/dD)` of the anchors (rows) of
  a sanitized distance matrix and its positive / negative masks, all without gradient (the caller reattaches `dL/dD`,
  `[B, M]`); each anchor's terms depend on its own row only.

  For `"hard"` the selected "triplets" are the anchors that have one. `candidates`: optional
  `mining.label_candidates` of the rows, which spare the slot layout its per-row search for the positives.
  """
  ds = jax.lax.stop_gradient(d)
  if mining == "hard":
    hard_pos, hard_neg, has = _mining.batch_hard_indices(ds, pos, neg)

    def hard_terms(d):
      d_ap = jnp.take_along_axis(d, hard_pos[:, None], axis=1)[:, 0]
      d_an = jnp.take_along_axis(d, hard_neg[:, None], axis=1)[:, 0]
      x = d_ap - d_an + margin
      return jnp.where(has, jax.nn.softplus(x) if soft else jnp.maximum(x, 0.0), 0.0)

    terms, vjp = jax.vjp(hard_terms, ds)
    (coef,) = vjp(jnp.ones_like(terms))
    return jnp.sum(terms), jnp.sum(terms > 0), jnp.sum(has), coef

  def mine(d):   # called inside each branch of the `cond` below, so that its `[B, M]` bounds are not operands
    if mining == "all":
      return _mining.all_triplets(d, pos, neg)
    return _mining.semihard_triplets(d, pos, neg, margin=margin)

  window = mine(ds)
  need_selected = reduction == "mean"

  def general(d):
    # Value and exact gradient of the sorted / tiled evaluation (any number of positives per anchor).
    window = mine(d)
    (total, (num_nonzero, num_selected)), coef = jax.value_and_grad(
        lambda d: _split(_window_totals(d, window, margin, soft, need_selected)), has_aux=True)(d)
    return total, num_nonzero, num_selected, coef

  # The selection is piecewise constant in `d`, so each branch returns the loss and its gradient `coef = dL/dD` ([B, M])
  # without gradient; `PairProblem.map_linear` reattaches it (value unchanged): the `cond` then keeps no residuals,
  # and the backward pass is one `[B, M]` product (blocks: none at all, the gradient is formed in the forward pass).
  if num_slots:
    return jax.lax.cond(_mining.max_positives(window, candidates) <= num_slots,
                        lambda d: _slot_totals(d, mine(d), margin, soft, num_slots, need_selected, candidates),
                        general, ds)
  return general(ds)


def _window_totals(d, window: _mining.TripletWindow, margin, soft: bool, need_selected: bool):
  """`(sum of losses, number of triplets with loss > 0, number of selected triplets)` with per-anchor sorted
  negatives and prefix sums (hinge) or anchor tiles (soft). Any number of positives per anchor."""
  if soft:
    sums, counts = _tiled_soft_sums(d, window, margin)
    # softplus > 0 everywhere: every selected triplet is "nonzero".
    count = jnp.sum(counts).astype(d.dtype)
    return jnp.sum(sums), count, count
  num_selected = jnp.sum(window_counts(d, window)).astype(d.dtype) if need_selected else jnp.zeros_like(d, shape=())
  hinge = _mining.restrict(window, upper=d + margin)
  count, neg_sum = _mining.window_sums(d, hinge.negative, hinge.lower, hinge.upper, [jnp.ones_like(d), d])
  per_pair = jnp.where(hinge.positive, count * (d + margin) - neg_sum, 0.0)
  return jnp.sum(per_pair), jnp.sum(jnp.where(hinge.positive, count, 0.0)), num_selected


def _split(totals):
  total, num_nonzero, num_selected = totals
  return total, (jax.lax.stop_gradient(num_nonzero), jax.lax.stop_gradient(num_selected))


def _slot_totals(d, window: _mining.TripletWindow, margin, soft: bool, num_slots: int, need_selected: bool,
                 candidates=None):
  """`(sum of losses, number of triplets with loss > 0, number of selected triplets, dL/dD)` over the positive-slot
  layout (`mining.slot_triplets`'s `[B, S, M]` triplets), evaluated as `S` passes of `[B, M]` operations (no `[B, S, M]`
  intermediate, no sort). Exact when no anchor has more than `num_slots` selected positives. `d` carries no gradient;
  the gradient is returned explicitly:

    hinge:  L = sum_{a,s,n} v_asn (D_as + m - D_an),  dL/dD_as = sum_n v_asn,  dL/dD_an = -sum_s v_asn
    soft:   L = sum_{a,s,n} softplus(x_asn),  x_asn = D_as + m - D_an,  dL/dD_as = sum_n sigmoid(x_asn),
            dL/dD_an = -sum_s sigmoid(x_asn)   (sums over selected triplets; v_asn = selected and x_asn > 0)
  """
  index, valid = _mining.positive_slots(window.positive, num_slots, candidates)
  d_ap = jnp.take_along_axis(d, index, axis=1)                                    # [B, S]
  lower = jnp.take_along_axis(jax.lax.stop_gradient(window.lower), index, axis=1)
  upper = jnp.where(valid, jnp.take_along_axis(jax.lax.stop_gradient(window.upper), index, axis=1), -jnp.inf)
  bound = upper if soft else jnp.minimum(upper, d_ap + margin)                    # hinge: only x > 0 counts
  neg = window.negative

  def slot_pass(carry, column):  # one positive slot as `[B, M]` operations
    per_negative, total, num_selected = carry
    lo, hi, up, d_as = (c[:, None] for c in column)
    inside = neg & (d > lo) & (d < hi)
    if soft:
      x = jnp.where(inside, d_as + margin - d, 0.0)
      total = total + jnp.sum(jnp.where(inside, jax.nn.softplus(x), 0.0))
      weight = jnp.where(inside, jax.nn.sigmoid(x), 0.0)
      num_selected = num_selected + jnp.sum(inside)
    else:
      weight = inside.astype(d.dtype)
      if need_selected:
        num_selected = num_selected + jnp.sum(neg & (d > lo) & (d < up))
    return (per_negative + weight, total, num_selected), jnp.sum(weight, axis=1)

  zero = jnp.zeros_like(d, shape=())   # zeros_like: typed like `d` (device-varying inside shard_map)
  columns = (lower.T, bound.T, upper.T, d_ap.T)                                   # each [S, B]
  (per_negative, total, num_selected), per_positive = _mining.scan_slots(
      slot_pass, (jnp.zeros_like(d), zero, zero), columns, jnp.any(valid, axis=0))
  per_positive = per_positive.T                                                   # [B, S]
  num_nonzero = num_selected
  rows = jnp.arange(d.shape[0])[:, None]
  coef = jnp.zeros_like(d).at[rows, index].add(jnp.where(valid, per_positive, 0.0)) - per_negative
  if soft:
    return total, num_nonzero, num_nonzero, coef
  num_nonzero = jnp.sum(per_positive)
  total = jnp.sum(per_positive * (d_ap + margin)) - jnp.sum(per_negative * d)
  return total, num_nonzero, num_selected, coef


def window_counts(distance, window: _mining.TripletWindow):
  """`[B, M]` number of selected negatives per anchor-positive pair (0 where the pair is not a selected positive)."""
  (count,) = _mining.window_sums(distance, window.negative, window.lower, window.upper,
                                       [jnp.ones_like(distance)])
  return jnp.where(window.positive, count, 0.0)


@register("triplet")
def triplet(embeddings, labels, *, valid=None, margin: float = 0.2, mining: str = "all", soft: bool = False,
            distance: str = "euclidean", squared: bool = False, reduction: str = "mean_nonzero",
            positive_slots: Optional[int] = DEFAULT_POSITIVE_SLOTS, axis_name=None, block_size=None, memory=None):
  """Triplet loss of a `[B, D]` batch with integer labels `[B]`; see `triplet_loss`.

  `distance`: `"euclidean"` (default, pytorch-metric-learning's `LpDistance(normalize_embeddings=False)`),
  `"squared_euclidean"` (FaceNet) or `"cosine"` (`1 - cos`, embeddings L2-normalized inside); Euclidean distances use
  the embeddings as given. `squared=True` is a shorthand for `distance="squared_euclidean"`. Scale arguments
  (`axis_name`, `block_size`, `memory`): see `metric_jax.losses.contrastive.contrastive`.
  """
  if not isinstance(squared, bool):
    raise TypeError(f"`squared` must be a bool, got {squared!r}.")
  if squared:
    if distance not in ("euclidean", "squared_euclidean"):
      raise ValueError(f"`squared=True` means `distance='squared_euclidean'`; it conflicts with "
                       f"`distance={distance!r}`.")
    distance = "squared_euclidean"
  _check_triplet(margin, mining, soft, reduction, positive_slots)
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=_metric.distance_fn(distance),
                                   axis_name=axis_name, block_size=block_size, memory=memory)
  return _triplet(problem, margin, mining, soft, reduction, positive_slots)


__all__ = ["triplet_loss", "triplet", "window_counts", "MININGS", "REDUCTIONS", "DEFAULT_POSITIVE_SLOTS"]
