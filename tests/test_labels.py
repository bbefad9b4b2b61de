"""Label masks: positives / negatives / validity, self pairs for square, rectangular and offset matrices; errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metric_jax import labels


def test_square_masks_exclude_the_diagonal_and_padding():
  y = jnp.array([0, 0, 1, 1, 0])
  valid = jnp.array([True, True, True, True, False])
  m = labels.pair_masks(y, query_valid=valid)
  yn = np.asarray(y)
  v = np.asarray(valid)
  both = v[:, None] & v[None] & ~np.eye(5, dtype=bool)
  np.testing.assert_array_equal(np.asarray(m.positive), both & (yn[:, None] == yn[None]))
  np.testing.assert_array_equal(np.asarray(m.negative), both & (yn[:, None] != yn[None]))
  np.testing.assert_array_equal(np.asarray(m.valid), both)
  assert not np.asarray(m.positive)[4].any() and not np.asarray(m.positive)[:, 4].any()


def test_rectangular_and_offset_self_pairs():
  q = jnp.array([1, 2])
  k = jnp.array([0, 1, 2, 1])
  auto = labels.pair_masks(q, k)              # rectangular, "auto": no self pairs
  np.testing.assert_array_equal(np.asarray(auto.positive), [[0, 1, 0, 1], [0, 0, 1, 0]])
  offset = labels.pair_masks(q, k, self_offset=1)   # query i is key i + 1
  np.testing.assert_array_equal(np.asarray(offset.positive), [[0, 0, 0, 1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(np.asarray(offset.valid), [[1, 0, 1, 1], [1, 1, 0, 1]])
  none = labels.pair_masks(jnp.array([0, 0]), self_offset=None)  # square but disjoint sets
  np.testing.assert_array_equal(np.asarray(none.positive), np.ones((2, 2), bool))


def test_check_matrix_inputs_validates_shapes_and_names_arguments():
  m = jnp.zeros((3, 4))
  y = jnp.array([0, 1, 0])
  out, masks = labels.check_matrix_inputs(m, y, jnp.array([0, 1, 1, 0]))
  assert masks.positive.shape == (3, 4)
  with pytest.raises(ValueError, match="key_labels"):
    labels.check_matrix_inputs(m, y)
  with pytest.raises(ValueError, match="query_labels"):
    labels.check_matrix_inputs(m, jnp.array([0, 1]), jnp.array([0, 1, 1, 0]))
  with pytest.raises(TypeError, match="query_labels"):
    labels.check_matrix_inputs(m, jnp.array([0.0, 1.0, 0.0]), jnp.array([0, 1, 1, 0]))
  with pytest.raises(ValueError, match="key_valid"):
    labels.check_matrix_inputs(m, y, jnp.array([0, 1, 1, 0]), key_valid=jnp.ones((3,), bool))
  with pytest.raises(TypeError, match="query_valid"):
    labels.check_matrix_inputs(m, y, jnp.array([0, 1, 1, 0]), query_valid=jnp.ones((3,)))
  with pytest.raises(ValueError, match="self_offset"):
    labels.pair_masks(y, self_offset="diag")


# ------------------------------------------------------------------------------------------------- multi-hot labels
# Rows carry labels {a}, {a, b}, {b}, {c}, {} (no label): pairs sharing a label are (0, 1) and (1, 2) only.
MULTI_HOT = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.int32)
SHARED = np.array([[1, 1, 0, 0, 0],
                   [1, 1, 1, 0, 0],
                   [0, 1, 1, 0, 0],
                   [0, 0, 0, 1, 0],
                   [0, 0, 0, 0, 0]], bool)   # written out by hand from the rows above


@pytest.mark.parametrize("dtype", [np.int32, np.int8, bool])
def test_multi_hot_positive_means_a_shared_label(dtype):
  m = labels.pair_masks(jnp.asarray(MULTI_HOT.astype(dtype)))
  off_diagonal = ~np.eye(5, dtype=bool)
  np.testing.assert_array_equal(np.asarray(m.positive), SHARED & off_diagonal)
  np.testing.assert_array_equal(np.asarray(m.negative), ~SHARED & off_diagonal)
  np.testing.assert_array_equal(np.asarray(m.valid), off_diagonal)


def test_multi_hot_rectangular_offset_and_padding():
  keys = np.array([[0, 1, 0], [1, 0, 1], [0, 0, 0], [1, 1, 1]], np.int32)
  queries = MULTI_HOT[:2]                       # {a}, {a, b}
  m = labels.pair_masks(queries, keys, query_valid=np.array([True, True]),
                        key_valid=np.array([True, True, True, False]), self_offset=1)
  # Keys {b}, {a, c}, {} (no label: a negative of everyone), {a, b, c} (padding). Query i is key i + 1 itself.
  np.testing.assert_array_equal(np.asarray(m.positive), [[0, 0, 0, 0], [1, 1, 0, 0]])
  np.testing.assert_array_equal(np.asarray(m.negative), [[1, 0, 1, 0], [0, 0, 0, 0]])


def test_one_hot_labels_give_the_class_id_masks():
  ids = np.array([2, 0, 2, 1, 0, 1, 1], np.int32)
  valid = np.array([True, True, False, True, True, True, True])
  one_hot = np.eye(3, dtype=bool)[ids]
  for a, b in zip(labels.pair_masks(ids, query_valid=valid), labels.pair_masks(one_hot, query_valid=valid)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Also traced, under jit.
  traced = jax.jit(lambda y: labels.pair_masks(y, query_valid=valid).positive)(one_hot)
  np.testing.assert_array_equal(np.asarray(traced), np.asarray(labels.pair_masks(ids, query_valid=valid).positive))


def test_same_label_needs_no_batch_by_batch_by_labels_tensor():
  y = jax.ShapeDtypeStruct((512, 1000), jnp.bool_)
  jaxpr = jax.make_jaxpr(lambda q: labels.same_label(q, q))(y)
  largest = max(np.prod(v.aval.shape) for eqn in jaxpr.eqns for v in eqn.outvars)
  assert largest <= 512 * 1000, largest


@pytest.mark.parametrize("query_labels,key_labels,error,argument", [
    (MULTI_HOT, np.array([0, 1, 0, 1, 2], np.int32), ValueError, "key_labels"),       # kinds differ
    (np.array([0, 1, 0, 1, 2], np.int32), MULTI_HOT, ValueError, "key_labels"),
    (MULTI_HOT, MULTI_HOT[:, :2], ValueError, "key_labels"),                           # L differs
    (MULTI_HOT[:, :1], None, ValueError, "query_labels"),                              # [B, 1] is ambiguous
    (MULTI_HOT * 2, None, ValueError, "query_labels"),                                 # values not 0/1
    (MULTI_HOT.astype(np.float32), None, TypeError, "query_labels"),                   # float
    (MULTI_HOT[None], None, ValueError, "query_labels"),                               # 3-D
])
def test_bad_multi_hot_labels_name_the_argument(query_labels, key_labels, error, argument):
  matrix = jnp.zeros((5, 5))
  with pytest.raises(error, match=argument):
    labels.check_matrix_inputs(matrix, query_labels, key_labels)


def test_multi_hot_values_are_checked_only_when_concrete():
  """Under jit the values are unknown: any non-zero entry counts as a label (documented), no error."""
  positive = jax.jit(lambda y: labels.pair_masks(y).positive)(MULTI_HOT * 2)
  np.testing.assert_array_equal(np.asarray(positive), SHARED & ~np.eye(5, dtype=bool))


def test_view_labels_pair_the_views_of_each_sample():
  np.testing.assert_array_equal(np.asarray(labels.view_labels(3)), [0, 1, 2, 0, 1, 2])
  np.testing.assert_array_equal(np.asarray(labels.view_labels(2, num_views=3)), [0, 1, 0, 1, 0, 1])
  assert labels.view_labels(4).dtype == jnp.int32
  positive = np.asarray(labels.pair_masks(labels.view_labels(3)).positive)
  np.testing.assert_array_equal(np.argwhere(positive), [[0, 3], [1, 4], [2, 5], [3, 0], [4, 1], [5, 2]])
  for bad, name in ((0, "num_samples"), (2.0, "num_samples")):
    with pytest.raises(ValueError, match=name):
      labels.view_labels(bad)
  with pytest.raises(ValueError, match="num_views"):
    labels.view_labels(3, num_views=0)
