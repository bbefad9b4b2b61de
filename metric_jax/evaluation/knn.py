"""Exact k-nearest neighbours in chunks: queries x references, running top-k, memory bounded by the chunk sizes.

A chunk of `b` queries meets one chunk of references (at most `reference_chunk_size`, cut into equal blocks of at most
`block_size` rows) in one compiled call: a loop over the blocks computes each `[b, block]` score block with one
matmul (small enough to stay in cache), writes it into a reused `[b, reference chunk]` score buffer, and keeps the
maximum of every group of `g = GROUP_SIZE` consecutive columns. The top k per row is then found in stages: per row the
k groups with the largest maximum are kept; every one of the k best entries lies in those groups (each kept group holds
an entry at least as large as any entry of a dropped group, and ties go to the lower group index), so the `k * g`
gathered entries (in index order) hold the exact answer. The same step once more inside them, with subgroups of
`SUBGROUP_SIZE`, leaves `k * SUBGROUP_SIZE` finalists, whose top k is the answer: selection over about
`N / 32 + 4k + 8k` entries per row instead of N. Reference chunks are merged into a running `[b, k]` top-k. Ties are
broken by the lower reference index everywhere, so the result equals a stable sort of each row of the full score
matrix.

Work that does not depend on the data. XLA's CPU `top_k` is a heap selection: its cost grows with the number of
entries that beat the running k-th best while a row is scanned, which depends on the values and their order (on
`[256, 3200]` rows that increase along the row it costs about 3x what it costs on the same values in random order).
Each selection stage here therefore first finds the k-th largest value `t` of every row exactly, with 32 counting
passes (bisection on the bits of an integer key that orders like the float: the largest `t` with `#{x >= t} >= k`),
and hands `top_k` the row with every entry below `t` replaced by `-inf`. Fewer than k entries of that row exceed `t`
and an entry equal to `t` can only displace a masked one, so the heap is replaced at most 2k times whatever the data,
and the result (values, indices, tie order) is the one `top_k` gives on the unmasked row. The counting passes are
fixed work: compares and sums over `[columns, SELECT_TILE]` tiles of query rows laid out column-major, which XLA
vectorizes across the tile.

XLA runs `top_k` on one CPU thread, so query chunks are spread over `num_threads` Python threads (each with its own
score buffer): one chunk's selection overlaps the next chunk's matmul, which itself uses every core.

Scores: `cosine` and `dot` return similarities (largest first); `euclidean` and `squared_euclidean` return distances
(smallest first), ranked through `2 q.r - |r|^2`, which orders each row like `-|q - r|^2` with one matmul.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from metric_jax.evaluation import _inputs

DEFAULT_CHUNK_SIZE = 256
DEFAULT_REFERENCE_CHUNK_SIZE = 65536
DEFAULT_BLOCK_SIZE = 2048
DEFAULT_NUM_THREADS = 2
GROUP_SIZE = 32
SUBGROUP_SIZE = 8  # second level: subgroups of the gathered candidates (GROUP_SIZE is a multiple of it)
SELECT_TILE = 8  # query rows per tile of the counting passes; query chunks are padded to a multiple of it
_INT32_MIN = np.int32(-2**31)


def _order_key(x):
  """int32 key with `key(a) < key(b)` iff `a < b` for non-NaN floats (and `-0.0` just below `+0.0`), the order in
  which XLA's `top_k` ranks floats."""
  bits = jax.lax.bitcast_convert_type(x, jnp.int32)
  return jnp.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)


def _kth_largest_key(keys, k):
  """Per row of `keys [R, M]` (int32, `R` a multiple of `SELECT_TILE`, `M >= k`) the k-th largest key, exactly.

  Bisection on the bits, most significant first: in the unsigned offset space `p = key ^ INT32_MIN`, bit `i` of the
  answer is set when at least k keys reach the prefix found so far with bit `i` set. 32 passes of one compare and one
  sum per entry, independent of the values; each tile of rows is held column-major (`[M, SELECT_TILE]`) so that the
  compares and sums run across the tile's rows in vector lanes.
  """
  rows, width = keys.shape
  tiles = keys.reshape(rows // SELECT_TILE, SELECT_TILE, width).transpose(0, 2, 1)

  def tile(tile_keys):
    def set_bit(i, prefix):
      trial = prefix | jax.lax.shift_left(jnp.int32(1), 31 - i)
      count = jnp.sum((tile_keys >= (trial ^ _INT32_MIN)[None, :]).astype(jnp.int32), axis=0)
      return jnp.where(count >= k, trial, prefix)
    return jax.lax.fori_loop(0, 32, set_bit, jnp.zeros((SELECT_TILE,), jnp.int32)) ^ _INT32_MIN

  return jax.lax.map(tile, tiles).reshape(rows)


def _top_k(x, k):
  """`jax.lax.top_k(x, k)` on rows of `x [R, M]` (same values, indices and tie order) in work that does not depend on
  the values: the k-th largest value of each row is found by counting (`_kth_largest_key`), every entry below it is
  masked to `-inf`, and `top_k` of the masked row replaces its heap at most 2k times (at most k - 1 entries exceed
  the k-th value; an entry equal to it replaces only a masked one, and a masked entry never replaces anything)."""
  keys = _order_key(x)
  kth = _kth_largest_key(keys, k)
  return jax.lax.top_k(jnp.where(keys >= kth[:, None], x, -jnp.inf), k)


def _gather_top_groups(values, group_max, k, g):
  """The k groups (of `g` consecutive columns) with the largest maxima, `groups [b, k]` in index order, and their
  entries `[b, k * g]` gathered in index order, from `values [b, W]` and `group_max [b, W / g]`.

  Every one of the k best entries of a row (ties to the lower index) lies in these groups: each kept group holds an
  entry at least as large as any entry of a dropped group, and equal maxima go to the lower group index. The gathered
  entries stay in index order, so ties among them still go to the lower index.
  """
  b, width = values.shape
  _, groups = _top_k(group_max, k)
  groups = jnp.sort(groups, axis=1)
  # One flat gather of the k * g entries per row (sorted, unique, in bounds: XLA's fast path on CPU).
  flat = (jnp.arange(b)[:, None, None] * width + groups[:, :, None] * g + jnp.arange(g)[None, None, :]).reshape(-1)
  entries = values.reshape(-1).at[flat].get(mode="promise_in_bounds", indices_are_sorted=True,
                                            unique_indices=True).reshape(b, k * g)
  return entries, groups


@functools.partial(jax.jit, static_argnames=("k", "exclude_self", "use_bias", "padded"), donate_argnames=("buffer",))
def _chunk_top_k(queries, references, bias, query_start, reference_start, num_refs, buffer, *, k, exclude_self,
                 use_bias, padded):
  """Top k of `queries @ references.T (+ bias)` per row, over one reference chunk cut into blocks.

  Args:
    queries: `[b, D]`.
    references: `[num_blocks, block, D]`, the chunk's rows in order; `block` is a multiple of `GROUP_SIZE`.
    bias: `[num_blocks, block]`, added to the scores when `use_bias`.
    query_start, reference_start: global indices of the first query / reference row.
    num_refs: number of real references; columns at or past it (padding) never rank.
    buffer: `[b, num_blocks * block]` float32 scratch for the scores, donated and returned for reuse.

  Returns:
    `(scores [b, k], reference indices [b, k], buffer)`; with `exclude_self`, column `query_start + i` of row i never
    ranks.
  """
  b = queries.shape[0]
  num_blocks, block, _ = references.shape
  g = GROUP_SIZE
  width = num_blocks * block

  def score_block(j, carry):
    scores, group_max = carry
    s = jnp.matmul(queries, references[j].T, precision=jax.lax.Precision.HIGHEST)
    if use_bias:
      s = s + bias[j][None, :]
    if exclude_self or padded:
      columns = reference_start + j * block + jnp.arange(block)
      drop = jnp.zeros((b, block), dtype=bool)
      if exclude_self:
        drop = drop | ((query_start + jnp.arange(b))[:, None] == columns[None, :])
      if padded:
        drop = drop | (columns >= num_refs)[None, :]
      s = jnp.where(drop, -jnp.inf, s)
    scores = jax.lax.dynamic_update_slice(scores, s, (0, j * block))
    group_max = jax.lax.dynamic_update_slice(group_max, jnp.max(s.reshape(b, block // g, g), axis=2),
                                             (0, j * (block // g)))
    return scores, group_max

  group_max = jnp.full((b, width // g), -jnp.inf, jnp.float32)
  scores, group_max = jax.lax.fori_loop(0, num_blocks, score_block, (buffer, group_max))
  if width // g > k:
    candidates, groups = _gather_top_groups(scores, group_max, k, g)  # [b, k * g]
    sub = SUBGROUP_SIZE
    # The same two steps once more inside the candidates: the k best subgroups of `sub` columns, then k of k * sub.
    sub_max = jnp.max(candidates.reshape(b, k * g // sub, sub), axis=2)
    finalists, subgroups = _gather_top_groups(candidates, sub_max, k, sub)  # [b, k * sub]
    values, position = _top_k(finalists, k)
    position = jnp.take_along_axis(subgroups, position // sub, axis=1) * sub + position % sub
    index = jnp.take_along_axis(groups, position // g, axis=1) * g + position % g
  else:
    values, index = _top_k(scores, k)
  return values, index + reference_start, scores


@functools.partial(jax.jit, static_argnames=("k",))
def _merge(values, index, new_values, new_index, *, k):
  """Running top-k: the earlier chunk comes first, so equal scores keep the lower reference index. (A plain `top_k`:
  on 2k entries its heap work is bounded by about 2k replacements whatever the data.)"""
  values = jnp.concatenate([values, new_values], axis=1)
  index = jnp.concatenate([index, new_index], axis=1)
  values, position = jax.lax.top_k(values, k)
  return values, jnp.take_along_axis(index, position, axis=1)


def _ranking_operands(queries, references, metric):
  """(query operand, reference operand, reference bias) with `score = q_op . r_op + bias`, larger is nearer."""
  if metric == "cosine":
    qn = np.linalg.norm(queries, axis=1, keepdims=True)
    rn = np.linalg.norm(references, axis=1, keepdims=True)
    queries = queries / np.where(qn > 0, qn, 1).astype(np.float32)
    references = references / np.where(rn > 0, rn, 1).astype(np.float32)
    return queries, references, np.zeros(references.shape[0], np.float32)
  if metric == "dot":
    return queries, references, np.zeros(references.shape[0], np.float32)
  # Euclidean: rank by 2 q.r - |r|^2 = |q|^2 - |q - r|^2.
  return 2.0 * queries, references, -np.sum(np.square(references), axis=1, dtype=np.float32)


def _reference_layout(num_refs, k, reference_chunk_size, block_size):
  """(number of reference chunks, blocks per chunk, block rows): equal chunks of equal blocks, each block a multiple
  of the group size, each chunk at least k wide."""
  num_chunks = max(1, math.ceil(num_refs / max(reference_chunk_size, k)))
  chunk = max(math.ceil(num_refs / num_chunks), k)
  num_blocks = math.ceil(chunk / block_size)
  block = math.ceil(math.ceil(chunk / num_blocks) / GROUP_SIZE) * GROUP_SIZE
  return num_chunks, num_blocks, block


def knn(queries, references=None, k: int = 1, *, metric: str = "cosine", exclude_self: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE, reference_chunk_size: int = DEFAULT_REFERENCE_CHUNK_SIZE,
        block_size: int = DEFAULT_BLOCK_SIZE, num_threads: int = DEFAULT_NUM_THREADS):
  """Exact k nearest references of every query, computed in chunks.

  `score_ij = cos(q_i, r_j)` (`cosine`), `q_i . r_j` (`dot`), `|q_i - r_j|` (`euclidean`) or `|q_i - r_j|^2`
  (`squared_euclidean`). Neighbours are sorted nearest first; equal scores keep the lower reference index first, as a
  stable sort of each row would.

  Args:
    queries: float `[Q, D]` (numpy or jax).
    references: float `[N, D]`; None means the queries themselves (then `exclude_self` is usually wanted).
    k: number of neighbours, `1 <= k <= N` (`N - 1` with `exclude_self`).
    metric: `cosine` | `dot` | `euclidean` | `squared_euclidean`.
    exclude_self: query i is reference i (same set, same order); it is never its own neighbour.
    chunk_size: queries per chunk (rounded up to a multiple of `SELECT_TILE`).
    reference_chunk_size: most references per chunk; larger reference sets are cut into equal chunks and merged.
      Peak extra memory is about `4 * num_threads * chunk_size * reference_chunk_size` bytes.
    block_size: most references per score block (one matmul) inside a reference chunk.
    num_threads: query chunks processed concurrently (each holds one score buffer).

  Returns:
    `(indices [Q, k] int32, scores [Q, k] float32)` as numpy arrays: similarities (descending) for `cosine` / `dot`,
    distances (ascending) for the Euclidean metrics.
  """
  metric = _inputs.check_metric(metric)
  queries = _inputs.as_embeddings(queries, "queries")
  references = queries if references is None else _inputs.as_embeddings(references, "references")
  _inputs.check_same_dim(queries, references, "references")
  k = _inputs.check_positive_int(k, "k")
  chunk_size = _inputs.check_positive_int(chunk_size, "chunk_size")
  reference_chunk_size = _inputs.check_positive_int(reference_chunk_size, "reference_chunk_size")
  block_size = _inputs.check_positive_int(block_size, "block_size")
  num_threads = _inputs.check_positive_int(num_threads, "num_threads")
  num_queries, num_refs = queries.shape[0], references.shape[0]
  if exclude_self and num_queries != num_refs:
    raise ValueError(f"`exclude_self` needs queries and references to be the same set, got {num_queries} queries "
                     f"and {num_refs} references.")
  available = num_refs - int(exclude_self)
  if k > available:
    raise ValueError(f"`k`={k} exceeds the {available} reference(s) available"
                     f"{' once each query itself is excluded' if exclude_self else ''}.")

  q_op, r_op, bias = _ranking_operands(queries, references, metric)

  num_ref_chunks, num_blocks, block = _reference_layout(num_refs, k, reference_chunk_size, block_size)
  ref_chunk = num_blocks * block
  padded_refs = ref_chunk * num_ref_chunks
  r_pad = np.zeros((padded_refs, r_op.shape[1]), np.float32)
  r_pad[:num_refs] = r_op
  b_pad = np.zeros((padded_refs,), np.float32)
  b_pad[:num_refs] = bias
  use_bias = metric in ("euclidean", "squared_euclidean")
  ref_chunks = [(jnp.asarray(r_pad[s:s + ref_chunk].reshape(num_blocks, block, -1)),
                 jnp.asarray(b_pad[s:s + ref_chunk].reshape(num_blocks, block)), s)
                for s in range(0, padded_refs, ref_chunk)]

  b = math.ceil(min(chunk_size, num_queries) / SELECT_TILE) * SELECT_TILE  # whole selection tiles
  starts = list(range(0, num_queries, b))
  workers = min(num_threads, len(starts))

  def run_chunks(thread):
    """Every `workers`-th query chunk, reusing one score buffer; returns {start: (values, index)}."""
    buffer = jnp.zeros((b, ref_chunk), jnp.float32)
    done = {}
    for start in starts[thread::workers]:
      q = q_op[start:start + b]
      if q.shape[0] < b:
        q = np.concatenate([q, np.zeros((b - q.shape[0], q.shape[1]), np.float32)])
      q = jnp.asarray(q)
      values = index = None
      for r, bias_chunk, r_start in ref_chunks:
        new_values, new_index, buffer = _chunk_top_k(q, r, bias_chunk, start, r_start, num_refs, buffer, k=k,
                                                     exclude_self=exclude_self, use_bias=use_bias,
                                                     padded=padded_refs > num_refs)
        if values is None:
          values, index = new_values, new_index
        else:
          values, index = _merge(values, index, new_values, new_index, k=k)
      done[start] = (np.asarray(values), np.asarray(index))
    return done

  if workers == 1:
    done = run_chunks(0)
  else:
    done = {}
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      for part in pool.map(run_chunks, range(workers)):
        done.update(part)
  values = np.concatenate([done[s][0] for s in starts])[:num_queries]
  index = np.concatenate([done[s][1] for s in starts])[:num_queries].astype(np.int32)

  if metric in ("euclidean", "squared_euclidean"):
    sq = np.sum(np.square(queries), axis=1, dtype=np.float32)[:, None]
    values = np.maximum(sq - values, 0.0)
    if metric == "euclidean":
      values = np.sqrt(values)
  return index, values.astype(np.float32)


__all__ = ["knn", "DEFAULT_CHUNK_SIZE", "DEFAULT_REFERENCE_CHUNK_SIZE", "DEFAULT_BLOCK_SIZE", "DEFAULT_NUM_THREADS"]
