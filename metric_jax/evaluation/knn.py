"""Exact k-nearest neighbours in chunks: queries x references, running top-k, memory bounded by the chunk sizes.

For a chunk of `b` queries and a chunk of `m` references the score block `S [b, m]` is one matmul (XLA). Its top k
per row is found in two stages: the columns are cut into groups of `g` and, per row, the k groups with the largest
maximum are kept; every one of the k best entries lies in those groups (each of the k kept groups holds an entry at
least as large as any entry of a dropped group, and ties go to the lower group index), so an exact top k over the
`k * g` gathered entries gives the exact answer at a fraction of a full `top_k` over `m` columns. Reference chunks are
merged into a running `[b, k]` top-k. Ties are broken by the lower reference index everywhere (`jax.lax.top_k` keeps
the lower index first, the gathered groups are put back in index order, and the running top-k precedes later chunks),
so the result equals a stable sort of each row of the full score matrix.

Scores: `cosine` and `dot` return similarities (largest first); `euclidean` and `squared_euclidean` return distances
(smallest first), ranked through `2 q.r - |r|^2`, which orders each row like `-|q - r|^2` with one matmul.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from metric_jax.evaluation import _inputs

DEFAULT_CHUNK_SIZE = 256
DEFAULT_REFERENCE_CHUNK_SIZE = 65536
GROUP_SIZE = 32


@functools.partial(jax.jit, static_argnames=("k", "exclude_self", "group_size", "use_bias", "padded"))
def _chunk_top_k(queries, references, bias, query_start, reference_start, num_refs, *, k, exclude_self, group_size,
                 use_bias, padded):
  """Top k of `queries @ references.T (+ bias)` per row; returns (scores [b, k], reference indices [b, k]).

  Columns at or past `num_refs` (padding) and, with `exclude_self`, column `query_start + i` of row i never rank.
  """
  scores = jnp.matmul(queries, references.T, precision=jax.lax.Precision.HIGHEST)
  if use_bias:
    scores = scores + bias[None, :]
  b, m = scores.shape
  columns = reference_start + jnp.arange(m)
  if exclude_self or padded:
    drop = jnp.zeros((b, m), dtype=bool)
    if exclude_self:
      drop = drop | ((query_start + jnp.arange(b))[:, None] == columns[None, :])
    if padded:
      drop = drop | (columns >= num_refs)[None, :]
    scores = jnp.where(drop, -jnp.inf, scores)
  num_groups = m // group_size
  if group_size > 1 and m % group_size == 0 and num_groups > k:
    _, groups = jax.lax.top_k(jnp.max(scores.reshape(b, num_groups, group_size), axis=2), k)
    groups = jnp.sort(groups, axis=1)  # index order, so that ties among candidates still go to the lower index
    # One flat gather of the k * g candidate scores per row (sorted, unique, in bounds: XLA's fast path on CPU).
    flat = (jnp.arange(b)[:, None, None] * m + groups[:, :, None] * group_size
            + jnp.arange(group_size)[None, None, :]).reshape(-1)
    candidates = scores.reshape(-1).at[flat].get(mode="promise_in_bounds", indices_are_sorted=True,
                                                 unique_indices=True).reshape(b, k * group_size)
    values, position = jax.lax.top_k(candidates, k)
    index = jnp.take_along_axis(groups, position // group_size, axis=1) * group_size + position % group_size
  else:
    values, index = jax.lax.top_k(scores, k)
  return values, index + reference_start


@functools.partial(jax.jit, static_argnames=("k",))
def _merge(values, index, new_values, new_index, *, k):
  """Running top-k: the earlier chunk comes first, so equal scores keep the lower reference index."""
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


def knn(queries, references=None, k: int = 1, *, metric: str = "cosine", exclude_self: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE, reference_chunk_size: int = DEFAULT_REFERENCE_CHUNK_SIZE):
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
    chunk_size: queries per chunk. Peak extra memory is about `4 * chunk_size * reference_chunk_size` bytes.
    reference_chunk_size: most references per chunk; larger reference sets are cut into equal chunks and merged.

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
  num_queries, num_refs = queries.shape[0], references.shape[0]
  if exclude_self and num_queries != num_refs:
    raise ValueError(f"`exclude_self` needs queries and references to be the same set, got {num_queries} queries "
                     f"and {num_refs} references.")
  available = num_refs - int(exclude_self)
  if k > available:
    raise ValueError(f"`k`={k} exceeds the {available} reference(s) available"
                     f"{' once each query itself is excluded' if exclude_self else ''}.")

  q_op, r_op, bias = _ranking_operands(queries, references, metric)

  # Equal reference chunks, each a multiple of the group size, at least k wide.
  num_ref_chunks = max(1, math.ceil(num_refs / max(reference_chunk_size, k)))
  ref_chunk = math.ceil(num_refs / num_ref_chunks)
  ref_chunk = max(math.ceil(ref_chunk / GROUP_SIZE) * GROUP_SIZE, k)
  padded_refs = ref_chunk * num_ref_chunks
  r_pad = np.zeros((padded_refs, r_op.shape[1]), np.float32)
  r_pad[:num_refs] = r_op
  b_pad = np.zeros((padded_refs,), np.float32)
  b_pad[:num_refs] = bias
  use_bias = metric in ("euclidean", "squared_euclidean")
  ref_chunks = [(jnp.asarray(r_pad[s:s + ref_chunk]), jnp.asarray(b_pad[s:s + ref_chunk]), s)
                for s in range(0, padded_refs, ref_chunk)]

  b = min(chunk_size, num_queries)
  out_values, out_index = [], []
  for start in range(0, num_queries, b):
    q = q_op[start:start + b]
    if q.shape[0] < b:
      q = np.concatenate([q, np.zeros((b - q.shape[0], q.shape[1]), np.float32)])
    q = jnp.asarray(q)
    values = index = None
    for r, bias_chunk, r_start in ref_chunks:
      new = _chunk_top_k(q, r, bias_chunk, start, r_start, num_refs, k=k, exclude_self=exclude_self,
                         group_size=GROUP_SIZE, use_bias=use_bias, padded=padded_refs > num_refs)
      values, index = new if values is None else _merge(values, index, *new, k=k)
    out_values.append(values)
    out_index.append(index)
  values = np.concatenate([np.asarray(v) for v in out_values])[:num_queries]
  index = np.concatenate([np.asarray(i) for i in out_index])[:num_queries].astype(np.int32)

  if metric in ("euclidean", "squared_euclidean"):
    sq = np.sum(np.square(queries), axis=1, dtype=np.float32)[:, None]
    values = np.maximum(sq - values, 0.0)
    if metric == "euclidean":
      values = np.sqrt(values)
  return index, values.astype(np.float32)


__all__ = ["knn", "DEFAULT_CHUNK_SIZE", "DEFAULT_REFERENCE_CHUNK_SIZE"]
