"""Label masks: positives / negatives / validity, self pairs for square, rectangular and offset matrices; errors."""

from __future__ import annotations

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
