"""Pair and triplet mining as boolean masks (jittable, static shapes).

Vocabulary. `distance` is a `[B, M]` matrix of queries (anchors) x keys where *smaller means closer* (Euclidean or
squared Euclidean distance; for a similarity `S` pass `-S`, or use the `similarity=True` forms below). `positive` and
`negative` are the `[B, M]` boolean masks of `metric_jax.labels.pair_masks` (self pairs and padded rows already False).

Pair miners return `(positive_mask, negative_mask)`: the subsets of `positive` / `negative` that are kept.

Triplet miners never build a `[B, M, M]` tensor. They return a `TripletWindow`: triplet `(a, p, n)` is selected iff

    positive[a, p]  and  negative[a, n]  and  lower[a, p] < D[a, n] < upper[a, p]

i.e. each anchor-positive pair owns an open interval of anchor-negative distances. Every classic triplet selection has
this form (all triplets: `(-inf, inf)`; margin-violating: `(-inf, D_ap + m)`; semi-hard: `(D_ap, D_ap + m)`), and sums
over the selected negatives of any per-negative quantity are computed in `O(B M log M)` by `window_sums` (sort the
anchor's negative distances once, prefix sums, two `searchsorted` per anchor-positive pair). `triplet_mask`
materializes the `[B, M, M]` mask for tests and tiny batches only.

When every anchor has few selected positives (PK batches: `K - 1` each), `slot_triplets` lays the triplets out densely
as `[B, S, M]` (anchor x positive slot x key, `S` a static bound) without sorting: `O(B S M)`, exact when the bound
holds (`max_positives`); the losses choose between the two layouts with `lax.cond`.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp

from metric_jax import _checks

PAIR_MINERS = ("none", "threshold", "triplet_margin", "batch_hard", "semihard", "multi_similarity")
TRIPLET_MINERS = ("none", "threshold", "triplet_margin", "batch_hard", "semihard", "multi_similarity")


class TripletWindow(NamedTuple):
  """Per anchor-positive selection of negatives (see module docstring). All fields `[B, M]`."""
  positive: jnp.ndarray
  negative: jnp.ndarray
  lower: jnp.ndarray
  upper: jnp.ndarray


def _check_masks(distance, positive, negative):
  distance = _checks.check_matrix(distance, "distance")
  for name, mask in (("positive", positive), ("negative", negative)):
    if tuple(mask.shape) != tuple(distance.shape):
      raise ValueError(f"`{name}` must have the shape of `distance` {distance.shape}, got {tuple(mask.shape)}.")
    if mask.dtype != jnp.bool_:
      raise TypeError(f"`{name}` must be a boolean mask, got dtype {mask.dtype}.")
  return jax.lax.stop_gradient(distance)


def _check_number(value, name):
  if not isinstance(value, (int, float)) and not hasattr(value, "dtype"):
    raise TypeError(f"`{name}` must be a number, got {type(value).__name__}.")
  return value


def _row_max(x, mask):
  """Max of `x` over `mask` per row; `-inf` for rows with no True entry."""
  return jnp.max(jnp.where(mask, x, -jnp.inf), axis=1)


def _row_min(x, mask):
  return jnp.min(jnp.where(mask, x, jnp.inf), axis=1)


# ----------------------------------------------------------------------------------------------------------- pairs
def threshold_pairs(distance, positive, negative, *, pos_threshold: float = 0.0, neg_threshold: float = 1.0):
  """Fixed thresholds `m1 <= m2` (GPW Eq. 18's hinge support): keep positives with `D > m1`, negatives with `D < m2`.

  Args:
    distance: `[B, M]` distances.
    positive, negative: `[B, M]` boolean masks.
    pos_threshold: `m1`.
    neg_threshold: `m2`.

  Returns:
    `(positive_mask, negative_mask)`, `[B, M]` booleans.
  """
  d = _check_masks(distance, positive, negative)
  _check_number(pos_threshold, "pos_threshold")
  _check_number(neg_threshold, "neg_threshold")
  return positive & (d > pos_threshold), negative & (d < neg_threshold)


def batch_hard_pairs(distance, positive, negative):
  """Hardest positive (largest `D`) and hardest negative (smallest `D`) of every anchor (Hermans et al. 2017).

  An anchor with no positive or no negative selects nothing. Ties pick the lowest key index (as `argmax` does).

  Returns:
    `(positive_mask, negative_mask)`: one-hot rows (or all-False rows), `[B, M]`.
  """
  hard_pos, hard_neg, has_both = batch_hard_indices(distance, positive, negative)
  keys = jnp.arange(distance.shape[1])[None, :]
  pos = (keys == hard_pos[:, None]) & positive & has_both[:, None]
  neg = (keys == hard_neg[:, None]) & negative & has_both[:, None]
  return pos, neg


def batch_hard_indices(distance, positive, negative):
  """Key indices of `batch_hard_pairs`: `(hardest positive [B], hardest negative [B], has both [B])`.

  Rows without a positive or without a negative have `has both` False (their indices are meaningless). Selecting the
  two distances with `take_along_axis` instead of one-hot masks keeps the gradient a `B`-element scatter.
  """
  d = _check_masks(distance, positive, negative)
  hard_pos = jnp.argmax(jnp.where(positive, d, -jnp.inf), axis=1)
  hard_neg = jnp.argmin(jnp.where(negative, d, jnp.inf), axis=1)
  has_both = jnp.any(positive, axis=1) & jnp.any(negative, axis=1)
  return hard_pos, hard_neg, has_both


def multi_similarity_pairs(matrix, positive, negative, *, epsilon: float = 0.1, similarity: bool = True):
  """Multi-similarity epsilon-mining (Wang et al. 2019, Eq. 9-10), for similarities or distances.

  Similarities (`similarity=True`, bigger = closer):
    positive (i, p) kept iff `S_ip - epsilon < max_n S_in`  (harder than the hardest negative, up to epsilon);
    negative (i, n) kept iff `S_in + epsilon > min_p S_ip`.
  Distances (`similarity=False`), the same rule with `D = -S`:
    positive kept iff `D_ip + epsilon > min_n D_in`;  negative kept iff `D_in - epsilon < max_p D_ip`.
  (DESIGN.md writes the distance form with `>=` / `<=`; the strict form is the exact image of the paper's rule and the
  two differ only on exact ties.) An anchor with no negative keeps no positive and vice versa, as in
  pytorch-metric-learning's `MultiSimilarityMiner`.

  Args:
    matrix: `[B, M]` similarities or distances.
    positive, negative: `[B, M]` boolean masks.
    epsilon: the margin epsilon (paper default 0.1).
    similarity: whether `matrix` holds similarities.

  Returns:
    `(positive_mask, negative_mask)`, `[B, M]` booleans.
  """
  m = _check_masks(matrix, positive, negative)
  _check_number(epsilon, "epsilon")
  d = -m if similarity else m
  hardest_neg = _row_min(d, negative)[:, None]
  hardest_pos = _row_max(d, positive)[:, None]
  return positive & (d + epsilon > hardest_neg), negative & (d - epsilon < hardest_pos)


def triplet_margin_pairs(distance, positive, negative, *, margin: float = 0.2):
  """Pairs that take part in at least one margin-violating triplet `D_ap - D_an + margin > 0`.

  Positive (a, p) kept iff `D_ap + margin > min_n D_an`; negative (a, n) kept iff `D_an < max_p D_ap + margin`.
  """
  d = _check_masks(distance, positive, negative)
  _check_number(margin, "margin")
  pos = positive & (d + margin > _row_min(d, negative)[:, None])
  neg = negative & (d < _row_max(d, positive)[:, None] + margin)
  return pos, neg


def semihard_pairs(distance, positive, negative, *, margin: float = 0.2):
  """Pairs that take part in at least one semi-hard triplet `D_ap < D_an < D_ap + margin` (FaceNet, Schroff 2015).

  Positive (a, p) kept iff some negative of `a` lies in `(D_ap, D_ap + margin)`; negative (a, n) kept iff some
  positive of `a` lies in `(D_an - margin, D_an)`. Counted with sorted rows and `searchsorted`, `O(B M log M)`.
  """
  d = _check_masks(distance, positive, negative)
  _check_number(margin, "margin")
  (neg_count,) = window_sums(d, negative, d, d + margin, [jnp.ones_like(d)])
  (pos_count,) = window_sums(d, positive, d - margin, d, [jnp.ones_like(d)])
  return positive & (neg_count > 0), negative & (pos_count > 0)


# -------------------------------------------------------------------------------------------------------- triplets
def all_triplets(distance, positive, negative) -> TripletWindow:
  """Every (anchor, positive, negative) triplet."""
  d = _check_masks(distance, positive, negative)
  return TripletWindow(positive, negative, jnp.full_like(d, -jnp.inf), jnp.full_like(d, jnp.inf))


def triplet_margin_triplets(distance, positive, negative, *, margin: float = 0.2) -> TripletWindow:
  """Margin-violating triplets `D_an < D_ap + margin` (loss > 0; pytorch-metric-learning's
  `TripletMarginMiner(type_of_triplets="all")` keeps `D_an - D_ap <= margin`, the same up to zero-loss ties)."""
  d = _check_masks(distance, positive, negative)
  _check_number(margin, "margin")
  return TripletWindow(positive, negative, jnp.full_like(d, -jnp.inf), d + margin)


def semihard_triplets(distance, positive, negative, *, margin: float = 0.2) -> TripletWindow:
  """All semi-hard triplets `D_ap < D_an < D_ap + margin` (FaceNet's set of semi-hard negatives, per anchor-positive).

  FaceNet picks one negative of this set per anchor-positive pair (at random); TF-Addons' `triplet_semihard_loss` picks
  the closest one and falls back to the farthest negative when the set is empty. Here every member of the set is a
  triplet (pytorch-metric-learning's `TripletMarginMiner(type_of_triplets="semihard")`, which keeps
  `0 < D_an - D_ap <= margin`), and an anchor-positive pair with an empty set contributes nothing (no fallback).
  """
  d = _check_masks(distance, positive, negative)
  _check_number(margin, "margin")
  return TripletWindow(positive, negative, d, d + margin)


def batch_hard_triplets(distance, positive, negative) -> TripletWindow:
  """One triplet per anchor: its hardest positive and hardest negative (see `batch_hard_pairs`)."""
  d = _check_masks(distance, positive, negative)
  pos, neg = batch_hard_pairs(d, positive, negative)
  return TripletWindow(pos, neg, jnp.full_like(d, -jnp.inf), jnp.full_like(d, jnp.inf))


def restrict(window: TripletWindow, *, positive=None, negative=None, lower=None, upper=None) -> TripletWindow:
  """Intersects a window with extra pair masks and/or bounds (e.g. the hinge bound `upper = D_ap + m`)."""
  pos = window.positive if positive is None else window.positive & positive
  neg = window.negative if negative is None else window.negative & negative
  lo = window.lower if lower is None else jnp.maximum(window.lower, lower)
  hi = window.upper if upper is None else jnp.minimum(window.upper, upper)
  return TripletWindow(pos, neg, lo, hi)


def window_sums(distance, negative, lower, upper, quantities: Sequence[jnp.ndarray]) -> Tuple[jnp.ndarray, ...]:
  """`out[k][a, p] = sum_n negative[a, n] * [lower[a, p] < D[a, n] < upper[a, p]] * quantities[k][a, n]`.

  Sorts each anchor's negative distances once and reads every window off prefix sums with two `searchsorted` per
  anchor-positive pair: `O(B M log M)` time, `O(B M)` memory. Gradients flow into `quantities` (not through the window
  bounds, which are piecewise constant).

  Args:
    distance: `[B, M]` anchor-to-key distances `D[a, n]` (only their order is used).
    negative: `[B, M]` boolean mask of the keys that may be summed over.
    lower, upper: `[B, M]` open-interval bounds for each anchor-positive pair `(a, p)`.
    quantities: `[B, M]` per anchor-negative values.

  Returns:
    A tuple of `[B, M]` arrays, one per quantity.
  """
  key = jnp.where(negative, jax.lax.stop_gradient(distance), jnp.inf)
  order = jnp.argsort(key, axis=1)
  sorted_key = jnp.take_along_axis(key, order, axis=1)
  lower = jax.lax.stop_gradient(lower)
  upper = jax.lax.stop_gradient(upper)
  first = jax.vmap(lambda row, q: jnp.searchsorted(row, q, side="right"))(sorted_key, lower)
  last = jax.vmap(lambda row, q: jnp.searchsorted(row, q, side="left"))(sorted_key, upper)
  num_neg = jnp.sum(negative, axis=1, keepdims=True)
  last = jnp.minimum(last, num_neg)
  first = jnp.minimum(first, last)
  outputs = []
  for q in quantities:
    q_sorted = jnp.take_along_axis(jnp.where(negative, q, 0.0), order, axis=1)
    prefix = jnp.concatenate([jnp.zeros_like(q_sorted[:, :1]), jnp.cumsum(q_sorted, axis=1)], axis=1)
    outputs.append(jnp.take_along_axis(prefix, last, axis=1) - jnp.take_along_axis(prefix, first, axis=1))
  return tuple(outputs)


class SlotTriplets(NamedTuple):
  """A window's triplets laid out densely over "positive slots" (see `slot_triplets`).

  index: `[B, S]` int32 key index of anchor `a`'s `s`-th selected positive (0 where the slot is empty).
  valid: `[B, S]` boolean, slot `s` of anchor `a` holds a positive.
  inside: `[B, S, M]` boolean, triplet `(a, index[a, s], n)` is selected by the window.
  """
  index: jnp.ndarray
  valid: jnp.ndarray
  inside: jnp.ndarray


def check_num_slots(num_slots, name: str = "positive_slots"):
  """`num_slots` as a static non-negative int (None means 0, i.e. no slot path)."""
  if num_slots is None:
    return 0
  if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 0:
    raise ValueError(f"`{name}` must be a non-negative int or None, got {num_slots!r}.")
  return num_slots


class Candidates(NamedTuple):
  """Per anchor, a few keys in key order that include all of its positives when `complete` (`label_candidates`).

  index: `[B, C]` int32 key indices; in_run: `[B, C]` whether the entry is a candidate; complete: scalar bool.
  """
  index: jnp.ndarray
  in_run: jnp.ndarray
  complete: jnp.ndarray


def label_candidates(query_labels, key_labels, query_valid, num_candidates: int, *, key_order=None) -> Candidates:
  """The keys that share each query's class label, from one sort of the key labels (`O(M log M + B C)`).

  The keys sorted by label (stable: key order within a class) form one run per class; query b's candidates are the
  first `C = num_candidates` keys of its class's run. They hold every positive of the query (same label; padded keys
  and the query itself are among them and are masked later by the positive mask) when the run has at most C keys:
  `complete` says whether that holds for every valid query.

  Args:
    query_labels: integer `[B]` class labels (not multi-hot).
    key_labels: integer `[M]`.
    query_valid: boolean `[B]`.
    num_candidates: `C`, a static positive int.
    key_order: optional `jnp.argsort(key_labels, stable=True)`, when the caller sorts the keys once for several
      blocks of queries.
  """
  num_keys = key_labels.shape[0]
  order = (jnp.argsort(key_labels, stable=True) if key_order is None else key_order).astype(jnp.int32)
  sorted_labels = key_labels[order]
  start = jnp.searchsorted(sorted_labels, query_labels, side="left")
  stop = jnp.searchsorted(sorted_labels, query_labels, side="right")
  position = start[:, None] + jnp.arange(num_candidates)[None, :]
  in_run = position < stop[:, None]
  index = jnp.where(in_run, order[jnp.minimum(position, num_keys - 1)], 0)
  complete = jnp.all(~query_valid | (stop - start <= num_candidates))
  return Candidates(index, in_run, complete)


def max_positives(window: TripletWindow, candidates: Candidates = None):
  """Scalar: the largest number of selected positives of any anchor (`max_a sum_p positive[a, p]`).

  With `candidates` that are `complete` (`label_candidates`), the positives are counted at the candidates only (`[B, C]`
  instead of a pass over `[B, M]`; the same count).
  """
  def over_rows(positive):
    return jnp.max(jnp.sum(positive, axis=1), initial=0).astype(jnp.int32)

  if candidates is None:
    return over_rows(window.positive)

  def at_candidates(positive):
    return over_rows(candidates.in_run & jnp.take_along_axis(positive, candidates.index, axis=1))

  return jax.lax.cond(candidates.complete, at_candidates, over_rows, window.positive)


def positive_slots(positive, num_slots: int, candidates: Candidates = None):
  """Key indices of each anchor's first `num_slots` positives, in key order, without sorting the row.

  `lax.top_k` of `-key_index` over the positives (`O(M log S)` per row, `-inf` elsewhere). With `candidates` that are
  `complete` (`label_candidates`: a superset of every anchor's positives, in key order), the positives are read from
  them instead (`O(B C)`: a gather of the mask at the candidates and a stable sort of `C` flags per anchor; the same
  result). Positives beyond the first `num_slots` are dropped (callers check `max_positives(window) <= num_slots`
  first). `S = min(num_slots, M)`.

  Args:
    positive: `[B, M]` boolean mask.
    num_slots: a static positive int.
    candidates: optional `Candidates` with at least `num_slots` columns.

  Returns:
    `(index, valid)`: `[B, S]` int32 key indices (0 in empty slots) and `[B, S]` booleans.
  """
  num_keys = positive.shape[1]
  slots = min(num_slots, num_keys)

  def by_top_k(positive):
    keys = jnp.where(positive, -jnp.arange(num_keys, dtype=jnp.float32)[None, :], -jnp.inf)
    top, index = jax.lax.top_k(keys, slots)
    valid = top > -jnp.inf
    return jnp.where(valid, index, 0).astype(jnp.int32), valid

  if candidates is None:
    return by_top_k(positive)
  return jax.lax.cond(candidates.complete, lambda positive: candidate_slots(positive, num_slots, candidates),
                      by_top_k, positive)


def candidate_slots(positive, num_slots: int, candidates: Candidates):
  """`positive_slots` read from `candidates` alone, for callers that already know them to be `complete`.

  Returns:
    `(index, valid)`: `[B, S]` int32 key indices (0 in empty slots) and `[B, S]` booleans, `S = min(num_slots, M)`.
  """
  slots = min(num_slots, positive.shape[1])
  if candidates.index.shape[1] < slots:
    raise ValueError(f"`candidates` has {candidates.index.shape[1]} columns, fewer than the {slots} slots.")
  valid = candidates.in_run & jnp.take_along_axis(positive, candidates.index, axis=1)
  first = jnp.argsort(~valid, axis=1, stable=True)[:, :slots]    # the positives first, in key order
  valid = jnp.take_along_axis(valid, first, axis=1)
  return jnp.where(valid, jnp.take_along_axis(candidates.index, first, axis=1), 0).astype(jnp.int32), valid


def scan_slots(slot_pass, init, columns, filled, *, unroll: int = 2):
  """`lax.scan` of `slot_pass(carry, column) -> (carry, out [B])` over the positive slots, skipping empty slots.

  `columns` is a tuple of arrays whose leading axis is the slot (`[S, B]` each); `filled [S]` says whether any anchor
  has a positive in that slot. A slot that no anchor fills (PK batches with `K - 1 < S` positives per anchor) is not
  evaluated: the carry passes through and its output is zeros. A `scan` (not a Python loop) keeps XLA from fusing the
  `S` row reductions into one slow multi-output loop on CPU.
  """

  def one_slot(carry, xs):
    column, present = xs
    return jax.lax.cond(present, slot_pass, lambda carry, column: (carry, jnp.zeros_like(column[0])), carry, column)

  return jax.lax.scan(one_slot, init, (columns, filled), unroll=unroll)


def slot_triplets(distance, window: TripletWindow, num_slots: int, candidates: Candidates = None) -> SlotTriplets:
  """Dense `[B, S, M]` layout of a window's triplets: anchor x positive slot x key.

  Exact when every anchor has at most `num_slots` selected positives (`max_positives(window) <= num_slots`), as in
  PK batches with `K <= num_slots + 1`; sums over triplets then cost `O(B S M)` time and memory, with no sort.
  The window is read without gradient (its bounds are piecewise constant).

  Args:
    distance: `[B, M]` anchor-to-key distances.
    window: a `TripletWindow`.
    num_slots: `S`, a static positive int.
    candidates: optional `Candidates` for `positive_slots`.

  Returns:
    A `SlotTriplets`.
  """
  d = jax.lax.stop_gradient(_checks.check_matrix(distance, "distance"))
  index, valid = positive_slots(window.positive, num_slots, candidates)
  lower = jnp.take_along_axis(jax.lax.stop_gradient(window.lower), index, axis=1)
  upper = jnp.take_along_axis(jax.lax.stop_gradient(window.upper), index, axis=1)
  inside = (valid[:, :, None] & window.negative[:, None, :] & (d[:, None, :] > lower[:, :, None])
            & (d[:, None, :] < upper[:, :, None]))
  return SlotTriplets(index, valid, inside)


def triplet_mask(distance, window: TripletWindow):
  """Materializes the `[B, M, M]` mask `[a, p, n]` of a window. For tests and tiny batches only."""
  d = jnp.asarray(distance)
  inside = (d[:, None, :] > window.lower[:, :, None]) & (d[:, None, :] < window.upper[:, :, None])
  return window.positive[:, :, None] & window.negative[:, None, :] & inside


# ------------------------------------------------------------------------------------------------------- by name
def mine_pairs(name: str, distance, positive, negative, *, pos_threshold=0.0, neg_threshold=1.0, margin=0.2,
               epsilon=0.1):
  """Pair miner by name (`PAIR_MINERS`); `distance` is a distance matrix (use `-S` for similarities)."""
  _checks.check_choice(name, "mining", PAIR_MINERS)
  if name == "none":
    return positive, negative
  if name == "threshold":
    return threshold_pairs(distance, positive, negative, pos_threshold=pos_threshold, neg_threshold=neg_threshold)
  if name == "triplet_margin":
    return triplet_margin_pairs(distance, positive, negative, margin=margin)
  if name == "batch_hard":
    return batch_hard_pairs(distance, positive, negative)
  if name == "semihard":
    return semihard_pairs(distance, positive, negative, margin=margin)
  return multi_similarity_pairs(distance, positive, negative, epsilon=epsilon, similarity=False)


def mine_triplets(name: str, distance, positive, negative, *, pos_threshold=0.0, neg_threshold=1.0, margin=0.2,
                  epsilon=0.1) -> TripletWindow:
  """Triplet miner by name (`TRIPLET_MINERS`). `threshold` and `multi_similarity` first mine pairs, then take every
  triplet whose two pairs were both kept."""
  _checks.check_choice(name, "mining", TRIPLET_MINERS)
  if name == "none":
    return all_triplets(distance, positive, negative)
  if name == "triplet_margin":
    return triplet_margin_triplets(distance, positive, negative, margin=margin)
  if name == "batch_hard":
    return batch_hard_triplets(distance, positive, negative)
  if name == "semihard":
    return semihard_triplets(distance, positive, negative, margin=margin)
  pos, neg = mine_pairs(name, distance, positive, negative, pos_threshold=pos_threshold,
                        neg_threshold=neg_threshold, epsilon=epsilon)
  return all_triplets(distance, pos, neg)


__all__ = [
    "PAIR_MINERS", "TRIPLET_MINERS", "TripletWindow", "threshold_pairs", "batch_hard_pairs", "batch_hard_indices",
    "multi_similarity_pairs",
    "triplet_margin_pairs", "semihard_pairs", "all_triplets", "triplet_margin_triplets", "semihard_triplets",
    "batch_hard_triplets", "restrict", "window_sums", "triplet_mask", "mine_pairs", "mine_triplets", "SlotTriplets",
    "check_num_slots", "Candidates", "label_candidates", "max_positives", "positive_slots", "candidate_slots",
    "scan_slots", "slot_triplets",
]
