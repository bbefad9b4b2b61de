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


# Data-independent selection: the same exact answer whatever the values and their order.

def _rows(name, rng, rows, width):
  x = rng.standard_normal((rows, width)).astype(np.float32)
  if name == "ascending":
    return np.sort(x, axis=1)
  if name == "descending":
    return np.sort(x, axis=1)[:, ::-1].copy()
  if name == "all_equal":
    return np.full_like(x, 0.25)
  if name == "few_values":  # heavy ties everywhere, also at the k-th value
    return np.round(x).astype(np.float32)
  if name == "signed_zeros":
    return np.where(x > 0, np.float32(0.0), np.float32(-0.0)) + np.where(np.abs(x) > 1.5, x, np.float32(0.0))
  if name == "with_inf":  # excluded and padded columns are -inf
    return np.where(x < -0.5, -np.inf, x).astype(np.float32)
  return x


@pytest.mark.parametrize("name", ["random", "ascending", "descending", "all_equal", "few_values", "signed_zeros",
                                  "with_inf"])
def test_select_top_k_equals_lax_top_k(name):
  """The counting selection returns exactly `jax.lax.top_k`'s values, indices and tie order."""
  import jax
  from metric_jax.evaluation.knn import SELECT_TILE, _top_k
  x = _rows(name, np.random.default_rng(4), 2 * SELECT_TILE, 300)
  for k in (1, 7, 150, 300):
    values, index = jax.jit(_top_k, static_argnums=1)(x, k)
    want_values, want_index = jax.lax.top_k(x, k)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_array_equal(np.signbit(values), np.signbit(want_values))
    np.testing.assert_array_equal(values, want_values)


def test_unstructured_float_embeddings():
  """Isotropic random directions (no class structure): neighbours match a float64 stable sort up to near-ties."""
  x = np.random.default_rng(5).standard_normal((700, 16)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  k = 40
  index, scores = knn(x, None, k, metric="dot", exclude_self=True, chunk_size=96, block_size=256)
  want_index, want_scores = ref.brute_knn(x, x, k, "dot", exclude_self=True)
  np.testing.assert_allclose(scores, want_scores, atol=2e-6)
  exact = ref.score_matrix(x, x, "dot")
  differ = index != want_index
  got = np.take_along_axis(exact, index, axis=1)[differ]
  want = np.take_along_axis(exact, want_index, axis=1)[differ]
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert not (index == np.arange(700)[:, None]).any()


@pytest.fixture(scope="module")
def ascending_set():
  """Rows `s_j u` with `s_j` rising (small integers, exact): every query's dot products rise along the reference
  order, the worst order for a heap selection; exact ties between rows of equal scale."""
  scale = np.repeat(np.arange(1, 76, dtype=np.float32), 4)  # 300 rows, four of each scale
  u = np.array([1, 2, 0, -1], np.float32)
  return scale[:, None] * u[None, :]


@pytest.mark.parametrize("k", [1, 5, 31])
def test_ascending_rows_with_ties(ascending_set, k):
  want_index, want_scores = ref.brute_knn(ascending_set, ascending_set, k, "dot", exclude_self=True)
  index, scores = knn(ascending_set, None, k, metric="dot", exclude_self=True, chunk_size=64, block_size=128)
  np.testing.assert_array_equal(index, want_index)
  np.testing.assert_array_equal(scores, want_scores)


@pytest.mark.parametrize("metric", ["dot", "squared_euclidean"])
def test_all_scores_equal(metric):
  """Identical rows: every score ties, so the neighbours are the lowest indices (self excluded), in order."""
  x = np.tile(np.array([[1.0, -2.0, 0.5]], np.float32), (400, 1))
  k = 9  # 400 references -> 13 groups > k: the two-stage path
  index, scores = knn(x, None, k, metric=metric, exclude_self=True, chunk_size=64, block_size=128)
  want = np.array([[j for j in range(k + 1) if j != i][:k] for i in range(400)])
  np.testing.assert_array_equal(index, want)
  np.testing.assert_array_equal(scores, np.full((400, k), 5.25 if metric == "dot" else 0.0, np.float32))


def test_many_ties_at_the_kth_score():
  """Each row has a few larger scores and then a long run of equal scores spread over many groups, so the k-th score
  is tied with far more entries than fit: the lowest indices among them must be taken."""
  rng = np.random.default_rng(6)
  references = np.zeros((1000, 2), np.float32)
  references[:, 0] = 1.0                        # score 1 for every query below ...
  top = rng.choice(1000, 12, replace=False)
  references[top, 1] = rng.integers(1, 4, 12)   # ... except 12 rows with scores 2..4
  queries = np.array([[1.0, 1.0], [1.0, 0.0], [1.0, 2.0]], np.float32)
  for k in (5, 12, 13, 40, 200):
    want_index, want_scores = ref.brute_knn(queries, references, k, "dot")
    index, scores = knn(queries, references, k, metric="dot", chunk_size=8, block_size=256)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_array_equal(scores, want_scores)


@pytest.mark.parametrize("k, reference_chunk_size, block_size", [
    (9, 320, 4096),    # 320 columns = 10 groups: just one more group than k
    (10, 320, 4096),   # groups == k: a single full selection over the chunk
    (32, 32, 4096),    # reference chunks exactly k wide, ten of them merged
    (31, 32, 4096),    # k one below the reference chunk size
    (299, 100000, 64),  # k = every other reference
])
def test_k_close_to_the_chunk_sizes(integer_set, k, reference_chunk_size, block_size):
  want_index, want_scores = ref.brute_knn(integer_set, integer_set, k, "dot", exclude_self=True)
  index, scores = knn(integer_set, None, k, metric="dot", exclude_self=True, chunk_size=100,
                      reference_chunk_size=reference_chunk_size, block_size=block_size)
  np.testing.assert_array_equal(index, want_index)
  np.testing.assert_array_equal(scores, want_scores)
