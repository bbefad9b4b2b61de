"""Exact chunked kNN against a brute-force numpy stable sort: chunking, ties, self-exclusion, every metric, errors.

Exact ties are built from small-integer embeddings, whose dot products and squared distances are exact in float32
whatever the summation order, so the lower-index-first tie-breaking can be compared position by position.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from metric_jax.evaluation import knn
from tests.evaluation import _reference as ref

METRICS = ("cosine", "dot", "euclidean", "squared_euclidean")


@pytest.fixture(scope="module")
def integer_set():
  """300 x 8 integer embeddings in [-2, 2] with a block of exact duplicates (rows 50..59 copy row 40)."""
  rng = np.random.default_rng(0)
  x = rng.integers(-2, 3, (300, 8)).astype(np.float32)
  x[50:60] = x[40]
  return x


@pytest.mark.parametrize("metric", ["dot", "squared_euclidean"])
@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("k", [3, 10])
def test_exact_ties_match_stable_brute_force(integer_set, metric, exclude_self, k):
  want_index, want_scores = ref.brute_knn(integer_set, integer_set, k, metric, exclude_self)
  index, scores = knn(integer_set, None, k, metric=metric, exclude_self=exclude_self, chunk_size=64,
                      block_size=64)
  np.testing.assert_array_equal(index, want_index)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-6)


@pytest.mark.parametrize("chunk_size, reference_chunk_size, block_size, num_threads", [
    (300, 100000, 4096, 1),  # one chunk, one block
    (100, 100, 4096, 2),     # divides 300 on both axes; three query chunks over two threads
    (7, 64, 4096, 3),        # divides neither: padded queries and references, several reference chunks merged
    (128, 97, 4096, 2),      # reference chunks rounded up to the group size
    (64, 100000, 64, 2),     # one reference chunk cut into five 64-row score blocks (the last one padded)
    (50, 150, 40, 4),        # blocks that are not a multiple of the group size are rounded up; more threads than
                             # needed
])
def test_chunked_equals_full(integer_set, chunk_size, reference_chunk_size, block_size, num_threads):
  full_index, full_scores = knn(integer_set, None, 5, metric="dot", exclude_self=True, chunk_size=300,
                                reference_chunk_size=100000, num_threads=1)
  index, scores = knn(integer_set, None, 5, metric="dot", exclude_self=True, chunk_size=chunk_size,
                      reference_chunk_size=reference_chunk_size, block_size=block_size, num_threads=num_threads)
  np.testing.assert_array_equal(index, full_index)
  np.testing.assert_array_equal(scores, full_scores)


@pytest.mark.parametrize("metric", METRICS)
def test_clustered_float_embeddings_every_metric(metric):
  rng = np.random.default_rng(1)
  queries, _ = ref.clustered(rng, 12, 10, 16, 0.5)
  references, _ = ref.clustered(rng, 12, 30, 16, 0.5)
  k = 4
  index, scores = knn(jnp.asarray(queries), jnp.asarray(references), k, metric=metric, chunk_size=50,
                      reference_chunk_size=200)
  want_index, want_scores = ref.brute_knn(queries, references, k, metric)
  np.testing.assert_allclose(scores, want_scores, rtol=2e-5, atol=2e-5)
  # Float32 rounding may swap two neighbours only when their exact scores are (nearly) equal.
  differ = index != want_index
  if differ.any():
    exact = ref.score_matrix(queries, references, metric)
    got = np.take_along_axis(exact, index, axis=1)[differ]
    want = np.take_along_axis(exact, want_index, axis=1)[differ]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_exclude_self_never_returns_the_query():
  x = np.tile(np.eye(4, dtype=np.float32), (5, 1))  # every row has 4 exact duplicates
  index, scores = knn(x, None, 4, metric="cosine", exclude_self=True)
  assert not (index == np.arange(20)[:, None]).any()
  np.testing.assert_array_equal(scores, np.ones((20, 4), np.float32))
  for i in range(20):  # the duplicates, lower index first
    np.testing.assert_array_equal(index[i], [j for j in range(i % 4, 20, 4) if j != i])


def test_k_equal_to_all_references():
  x = np.random.default_rng(2).standard_normal((9, 3)).astype(np.float32)
  index, _ = knn(x, None, 8, exclude_self=True)
  assert sorted(index[0].tolist()) == list(range(1, 9))


@pytest.mark.parametrize("call, message", [
    (lambda x: knn(x[:0], x, 1), "queries"),
    (lambda x: knn(x, x[:0], 1), "references"),
    (lambda x: knn(np.where(np.arange(10)[:, None] == 3, np.nan, x), None, 1), "queries"),
    (lambda x: knn(x, np.full_like(x, np.inf), 1), "references"),
    (lambda x: knn(x, x[:, :2], 1), "references"),
    (lambda x: knn(x, x, 10, exclude_self=True), "k"),
    (lambda x: knn(x, x, 0), "k"),
    (lambda x: knn(x, x[:5], 1, exclude_self=True), "exclude_self"),
    (lambda x: knn(x, x, 1, metric="manhattan"), "metric"),
    (lambda x: knn(x, x, 1, chunk_size=0), "chunk_size"),
    (lambda x: knn(x, x, 1, block_size=-1), "block_size"),
    (lambda x: knn(x, x, 1, num_threads=0), "num_threads"),
    (lambda x: knn(x.astype(np.int32), x, 1), "queries"),
])
def test_bad_input_names_the_argument(call, message):
  x = np.random.default_rng(3).standard_normal((10, 3)).astype(np.float32)
  with pytest.raises((ValueError, TypeError), match=message):
    call(x)
