"""Histogram loss (S4, Ustinova & Lempitsky 2016).

The cosine similarities of positive pairs and of negative pairs are summarized by two histograms on the `R = num_bins + 1`
uniformly spaced nodes `t_r = −1 + rΔ`, `Δ = 2 / num_bins` (so `num_bins` counts the intervals, the convention of
pytorch-metric-learning's `HistogramLoss(n_bins)`; the paper's `R` is `num_bins + 1`). Each similarity s in
`[t_r, t_{r+1}]` adds `(t_{r+1} − s)/Δ` to node r and `(s − t_r)/Δ` to node r+1 (linear, triangular-kernel
assignment), which is differentiable in s. `h⁺` and `h⁻` are normalized to sum 1, and the loss estimates the
probability that a random negative pair is more similar than a random positive pair:

  L = Σ_r h⁻_r Φ⁺_r,   Φ⁺_r = Σ_{q≤r} h⁺_q.

Margin (`margin_bins` = μ ≥ 0): `L_μ = Σ_r h⁻_r Φ⁺_{min(r+μ, R−1)}`, the probability that a positive similarity is
below a negative one *plus μΔ*: a negative is penalized for every positive that is not at least μ bins above it.
μ = 0 is the paper's loss.

The histograms are built by scatter-adding the `[B, M]` kernel weights into `R` nodes (O(BM + R), never `B × M × R`),
and the gradient is formed explicitly from `dL/dH` (one gather per pair; `_histogram`). In the square matrix of one
batch each unordered pair appears twice ((i, j) and (j, i)); pytorch-metric-learning counts it once. The normalized
histograms, and so the loss, are identical; in blocks (`block_size`, 3 blocks or more) each unordered pair is visited
once with weight 2 (`PairProblem.map_pairs`), which halves the work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import pairwise
from metric_jax.losses import _shard
from metric_jax.losses._registry import register


def _check_bins(num_bins, margin_bins):
  if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
    raise ValueError(f"`num_bins` must be a positive Python int, got {num_bins!r}.")
  if isinstance(margin_bins, bool) or not isinstance(margin_bins, int) or not 0 <= margin_bins <= num_bins:
    raise ValueError(f"`margin_bins` must be a Python int in [0, num_bins={num_bins}], got {margin_bins!r}.")


def _node_positions(similarity, num_bins: int):
  """`(lower, upper_weight)`: each similarity's lower node index (int32, in `[0, num_bins - 1]`) and the weight
  `(s − t_lower)/Δ ∈ [0, 1]` that goes to the node above it (`1 − upper_weight` to the lower node)."""
  position = (jnp.clip(similarity, -1.0, 1.0) + 1.0) * (num_bins / 2.0)
  lower = jnp.clip(jnp.floor(jax.lax.stop_gradient(position)), 0, num_bins - 1)
  return lower.astype(jnp.int32), position - lower


def _segments(lower, masks, num_bins: int):
  """Segment index `lower + k * num_bins` of each entry under the k-th of K disjoint masks; `K * num_bins` (one extra
  segment) for the entries outside every mask."""
  segment = jnp.full(lower.shape, len(masks) * num_bins, jnp.int32)
  for k, mask in enumerate(masks):
    segment = jnp.where(mask, lower + k * num_bins, segment)
  return segment


def _histogram_nodes(similarity, masks, num_bins: int, weight=None):
  """Unnormalized histograms `[K, num_bins + 1]` of `similarity` under K *disjoint* masks.

  One segment-sum over the pairs, indexed by (mask, lower node), accumulates the weights that go to the lower and to
  the upper node; the upper weights are then shifted up by one node. Pairs outside every mask go to one extra segment
  that is dropped. `weight`: optional multiplicity of each key column (`[M]`, small integers: `PairProblem.map_pairs`).
  """
  lower, upper_weight = _node_positions(similarity, num_bins)
  segment = _segments(lower, masks, num_bins)
  lower_weight = 1.0 - upper_weight
  if weight is not None:
    lower_weight, upper_weight = lower_weight * weight, upper_weight * weight
  weights = jnp.stack([lower_weight.ravel(), upper_weight.ravel()], axis=1)
  sums = jax.ops.segment_sum(weights, segment.ravel(), num_segments=len(masks) * num_bins + 1,
                             mode="promise_in_bounds")
  sums = sums[:-1].reshape(len(masks), num_bins, 2)
  zero = jnp.zeros_like(sums, shape=(len(masks), 1))
  return jnp.concatenate([sums[:, :, 0], zero], axis=1) + jnp.concatenate([zero, sums[:, :, 1]], axis=1)


def _histogram_sums(similarity, masks, num_bins: int):
  """`_histogram_nodes` and the counts `[K]` of the masks (exact integer counts: float sums drift for large masks)."""
  hists = _histogram_nodes(similarity, masks, num_bins)
  return hists, jnp.stack([jnp.sum(mask) for mask in masks]).astype(hists.dtype)


def _histograms(similarity, masks, num_bins: int):
  """Normalized histograms `[K, num_bins + 1]` and counts `[K]` of `similarity` under K *disjoint* masks."""
  hists, counts = _histogram_sums(similarity, masks, num_bins)
  return hists / jnp.maximum(counts, 1)[:, None], counts


def similarity_histogram(similarity, mask, num_bins: int = 100):
  """Normalized triangular-kernel histogram of the `similarity` entries where `mask` holds.

  Args:
    similarity: float array of similarities in `[−1, 1]` (values outside are clipped).
    mask: boolean array of the same shape.
    num_bins: number of intervals; the histogram has `num_bins + 1` nodes `−1 + 2r/num_bins`.

  Returns:
    `(h [num_bins + 1], count)`: `h` sums to 1 when `count > 0` and is all zeros otherwise.
  """
  hists, counts = _histograms(similarity, [mask], num_bins)
  return hists[0], counts[0]


def histogram_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                   num_bins: int = 100, margin_bins: int = 0, axis_name=None, block_size=None):
  """Histogram loss on a cosine similarity matrix.

  Args:
    matrix: cosine similarities of L2-normalized embeddings, `[B, M]`.
    query_labels: integer `[B]`.
    key_labels: integer `[M]`; None when the keys are the queries (square matrix, self pairs excluded).
    query_valid: optional boolean `[B]`; False rows are padding.
    key_valid: optional boolean `[M]`.
    self_offset: which key each query is itself (see `metric_jax.labels`).
    num_bins: number of intervals of `[−1, 1]`, step `Δ = 2/num_bins` (default 100, Δ = 0.02, as
      pytorch-metric-learning; the paper reports the loss to be insensitive to Δ over a wide range and uses fine
      steps such as Δ = 0.01, i.e. `num_bins=200`).
    margin_bins: `μ`, the margin in bins (default 0, the paper's loss).
    axis_name, block_size: rows sharded over a `shard_map` axis / evaluated in blocks (see
      `metric_jax.losses.contrastive.contrastive_loss` and `metric_jax.losses._shard`): the histograms are sums
      over the pairs of every block and device, normalized once at the end.

  Returns:
    Scalar loss in [0, 1]; 0 when the batch has no positive or no negative pair.

  References:
    Ustinova, Lempitsky, "Learning Deep Embeddings with Histogram Loss", NeurIPS 2016.
  """
  problem = _shard.from_matrix(matrix, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size)
  return _histogram(problem, num_bins, margin_bins)


def _loss_of_histograms(hists, counts, margin_bins):
  """The loss from the unnormalized histograms `[2, R]` (positive, negative) and their pair counts `[2]`."""
  h_pos, h_neg = hists / jnp.maximum(counts, 1)[:, None]
  cdf_pos = jnp.cumsum(h_pos)
  shifted = jnp.minimum(jnp.arange(h_pos.shape[0]) + margin_bins, h_pos.shape[0] - 1)
  loss = jnp.sum(h_neg * cdf_pos[shifted])
  return jnp.where((counts[0] > 0) & (counts[1] > 0), loss, 0.0)


def _histogram(problem, num_bins, margin_bins):
  """One block: autodiff through the histograms. Several blocks (or devices): two passes over the pairs, each
  unordered pair once where the problem allows (`PairProblem.map_pairs`):

  1. the histograms `H⁺, H⁻` (sums over the blocks and devices), hence the loss L and `T = dL/dH` `[2, R]`;
  2. the gradient, formed explicitly: a pair with similarity s in `[t_r, t_{r+1}]` under mask k adds `(t_{r+1} −
     s)/Δ` to `H_k[r]` and `(s − t_r)/Δ` to `H_k[r+1]`, so `dL/ds = (T_k[r+1] − T_k[r]) / Δ`, one gather from a
     `[2 num_bins]` table per pair (`PairProblem.map_pairs_linear`; no rematerialized blocks).
  """
  _check_bins(num_bins, margin_bins)
  if problem.single_block and not problem.pairs_once:
    # One block over the whole matrix: autodiff through the scatter (its transpose is a gather) reuses the forward
    # pass's node positions and is faster than a second pass.
    def block(rows, extras, consts):
      return None, _histogram_sums(rows.matrix, [rows.positive, rows.negative], num_bins)

    _, sums, alarm = problem.map(block)
    hists, counts = problem.sum_blocks(sums)
    return _loss_of_histograms(hists, counts, margin_bins) + alarm + problem.alarm

  def histograms(block, weight):
    return (_histogram_nodes(block.matrix, [block.positive, block.negative], num_bins, weight),
            jnp.stack(problem.pair_counts(block, weight)))

  sums, alarm = problem.map_pairs(histograms)
  hists, counts = problem.sum_blocks(sums)
  loss, slopes = jax.value_and_grad(_loss_of_histograms)(hists, counts, margin_bins)
  slopes = (slopes[:, 1:] - slopes[:, :-1]) * (num_bins / 2.0)              # [2, num_bins]: dL/ds per lower node
  table = jnp.concatenate([slopes.ravel(), jnp.zeros((1,), slopes.dtype)])  # + 0 for pairs outside both masks

  def gradient(block, weight):
    lower, _ = _node_positions(block.matrix, num_bins)
    segment = _segments(lower, [block.positive, block.negative], num_bins)
    coef = table.at[segment].get(mode="promise_in_bounds") * weight
    return jnp.zeros((), coef.dtype), coef, None

  linear, _, _ = problem.map_pairs_linear(gradient)
  return jax.lax.stop_gradient(loss) + problem.psum(linear) + alarm + problem.alarm


@register("histogram")
def histogram(embeddings, labels, *, valid=None, num_bins: int = 100, margin_bins: int = 0, axis_name=None,
              block_size=None, memory=None):
  """Histogram loss of `[B, D]` embeddings with `[B]` labels on cosine similarities (see `histogram_loss`).

  Cosine only: the histogram nodes span `[-1, 1]`, the range of the cosine (embeddings L2-normalized inside).
  Scale arguments (`axis_name`, `block_size`, `memory`): see `metric_jax.losses.contrastive.contrastive`.
  """
  _check_bins(num_bins, margin_bins)
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=pairwise.cosine_similarity,
                                   axis_name=axis_name, block_size=block_size, memory=memory)
  return _histogram(problem, num_bins, margin_bins)


__all__ = ["similarity_histogram", "histogram_loss", "histogram"]
