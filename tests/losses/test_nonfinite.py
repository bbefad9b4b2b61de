"""Non-finite values never hide and padded rows never leak (issue 10, item 2; DESIGN.md, "The loss contract").

For every registry loss, in its convenience form (`losses.get(name)`) and in its matrix form, and for the
regularizers:
- a NaN, +inf or -inf in a valid row (an embedding entry; a matrix entry of a valid pair) makes the loss VALUE
  non-finite, never a finite value whose gradient is NaN (before the fix, `triplet`, `contrastive`, the lifted
  structure losses, the GPW losses and `multi_similarity` returned a finite value);
- a padded row (`valid=False`; in the matrix form, any entry of a pair that is not valid, the self pairs included) may
  hold NaN, inf or 1e30: the value and the valid rows' gradients are bitwise those of the same batch with a benign
  padded row, they agree with the batch without the padded rows, and the padded rows' gradient is exactly 0 (before
  the fix a NaN padded row made the valid rows' gradients NaN for most losses).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metric_jax import losses, regularizers
from tests.losses._loss_cases import MATRIX_FORMS, REGISTRY_NAMES

B, D = 12, 8
PAD = 3                                  # padded rows appended to the B real rows
BAD_VALID = (np.nan, np.inf, -np.inf)    # non-finite values a valid row may hold
BAD_PADDED = (np.nan, np.inf, 1e30)      # what a padded row may hold

# Each parameter-free registry loss's matrix form and the matrix its convenience form builds by default.
PAIR_MATRIX_FORMS = {name: form for name, form in MATRIX_FORMS.items() if form[1] is not None}
assert sorted(PAIR_MATRIX_FORMS) == sorted(REGISTRY_NAMES)


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  embeddings = (rng.normal(size=(B, D)) / np.sqrt(D)).astype(np.float32)
  labels = (np.arange(B) % 4).astype(np.int32)          # 4 classes of 3: every row has positives and negatives
  return embeddings, labels


def _padded(embeddings, labels, fill):
  """The batch with PAD padded rows interleaved (rows 2, 7 and the last): `fill` in every entry of the first padded
  row, and NaN, +inf, -inf, 1e30 mixed in the others (unless `fill` is finite and benign)."""
  rows = np.array([2, 7, B + PAD - 1])
  real = np.setdiff1d(np.arange(B + PAD), rows)
  out = np.zeros((B + PAD, D), np.float32)
  out[real] = embeddings
  out[rows] = np.float32(fill)
  if not np.isfinite(fill) or abs(fill) > 1e3:
    out[rows[1]] = np.resize(np.array([np.nan, np.inf, -np.inf, 1e30], np.float32), D)
  padded_labels = np.zeros((B + PAD,), np.int32)
  padded_labels[real] = labels
  padded_labels[rows] = labels[:PAD]                     # would form positive pairs if they were not masked
  valid = np.zeros((B + PAD,), bool)
  valid[real] = True
  return out, padded_labels, valid, real, rows


@functools.lru_cache(maxsize=None)
def _value_and_grad(name):
  fn = losses.get(name)
  return jax.jit(jax.value_and_grad(lambda e, l, v: fn(e, l, valid=v)))


# ------------------------------------------------------------------------------------------------- convenience form
@pytest.mark.parametrize("bad", BAD_VALID, ids=str)
@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_nonfinite_entry_in_a_valid_row_makes_the_value_nonfinite(name, bad):
  embeddings, labels = _batch()
  embeddings[4, 3] = bad
  value, _ = _value_and_grad(name)(embeddings, labels, np.ones((B,), bool))
  assert not np.isfinite(float(value)), f"{name}: finite loss {float(value)} with {bad} in a valid row"
  # Eagerly too (no fusion can hide or reveal it differently).
  assert not np.isfinite(float(losses.get(name)(jnp.asarray(embeddings), labels)))


@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_nonfinite_row_that_takes_part_in_no_pair_still_shows(name):
  """The N-pair losses ignore a class's third sample, and a lone valid row forms no pair: the value still shows it."""
  embeddings, labels = _batch()
  labels = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5], np.int32)
  embeddings[2, 0] = np.nan                               # the third sample of class 0
  value, _ = _value_and_grad(name)(embeddings, labels, np.ones((B,), bool))
  assert not np.isfinite(float(value)), name
  valid = np.zeros((B,), bool)
  valid[2] = True                                         # a single valid row: no pair at all
  value, _ = _value_and_grad(name)(embeddings, labels, valid)
  assert not np.isfinite(float(value)), name


@pytest.mark.parametrize("bad", BAD_PADDED, ids=str)
@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_padded_rows_holding_nonfinite_or_huge_values_change_nothing(name, bad):
  embeddings, labels = _batch(1)
  fn = _value_and_grad(name)
  value, grad = fn(*_padded(embeddings, labels, bad)[:3])
  benign_value, benign_grad = fn(*_padded(embeddings, labels, 0.5)[:3])
  _, _, _, real, rows = _padded(embeddings, labels, bad)
  grad = np.asarray(grad)
  assert np.isfinite(float(value)) and np.isfinite(grad).all(), f"{name}: {float(value)}, {grad}"
  # Bitwise: the padded rows' content cannot reach anything.
  assert float(value) == float(benign_value)
  np.testing.assert_array_equal(grad, np.asarray(benign_grad))
  np.testing.assert_array_equal(grad[rows], 0.0)          # exactly zero, not merely finite
  # And the batch without the padded rows (a different shape, so equal up to float rounding).
  ref_value, ref_grad = fn(embeddings, labels, np.ones((B,), bool))
  np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad[real], np.asarray(ref_grad), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------------- matrix form
def _matrix_case(name, seed=2):
  loss, metric = PAIR_MATRIX_FORMS[name]
  embeddings, labels = _batch(seed)
  return loss, np.asarray(metric(jnp.asarray(embeddings))), labels


@pytest.mark.parametrize("bad", BAD_VALID, ids=str)
@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_matrix_form_nonfinite_entry_of_a_valid_pair_makes_the_value_nonfinite(name, bad):
  loss, matrix, labels = _matrix_case(name)
  for i, j in ((0, 4), (5, 2)):                           # a positive pair and a negative pair
    m = matrix.copy()
    m[i, j] = bad
    value = jax.jit(lambda m, l: loss(m, l))(m, labels)
    assert not np.isfinite(float(value)), f"{name}: finite loss {float(value)} with {bad} at valid pair {(i, j)}"


@pytest.mark.parametrize("bad", BAD_PADDED, ids=str)
@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_matrix_form_entries_of_pairs_that_are_not_valid_change_nothing(name, bad):
  loss, matrix, labels = _matrix_case(name)
  valid = np.ones((B,), bool)
  valid[[3, 8]] = False
  pair_valid = valid[:, None] & valid[None, :] & ~np.eye(B, dtype=bool)
  fn = jax.jit(jax.value_and_grad(lambda m, l, v: loss(m, l, query_valid=v)))

  garbage = np.where(pair_valid, matrix, np.float32(bad))
  garbage[3, 0], garbage[0, 8] = np.nan, -np.inf          # mixed non-finite values among the invalid entries
  value, grad = fn(garbage, labels, valid)
  benign_value, benign_grad = fn(matrix, labels, valid)
  grad = np.asarray(grad)
  assert np.isfinite(float(value)) and np.isfinite(grad).all(), f"{name}: {float(value)}"
  assert float(value) == float(benign_value)
  np.testing.assert_array_equal(grad, np.asarray(benign_grad))
  np.testing.assert_array_equal(grad[~pair_valid], 0.0)
  keep = np.flatnonzero(valid)
  ref_value, ref_grad = fn(matrix[np.ix_(keep, keep)], labels[keep], np.ones((len(keep),), bool))
  np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad[np.ix_(keep, keep)], np.asarray(ref_grad), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------------- regularizers
def _regularizers():
  alpha = jnp.linspace(0.3, 0.9, 4)
  d0 = jnp.linspace(0.5, 2.0, 4)
  return {
      "density_adaptivity": lambda e, l, v: regularizers.density_adaptivity(e, l, alpha, d0, valid=v),
      "global_orthogonal": lambda e, l, v: regularizers.global_orthogonal(e, l, valid=v),
      "entropy": lambda e, l, v: regularizers.entropy(e, l, valid=v),
      "embedding_l2": lambda e, l, v: regularizers.embedding_l2(e, valid=v),
      "class_densities": lambda e, l, v: jnp.sum(regularizers.class_densities(e, l, 4, valid=v)[0]),
  }


REGULARIZERS = tuple(_regularizers())


@pytest.mark.parametrize("bad", BAD_VALID, ids=str)
@pytest.mark.parametrize("name", REGULARIZERS)
def test_regularizer_nonfinite_valid_row_makes_the_value_nonfinite(name, bad):
  embeddings, labels = _batch(3)
  embeddings[6, 1] = bad
  fn = jax.jit(_regularizers()[name])
  assert not np.isfinite(float(fn(embeddings, labels, np.ones((B,), bool)))), name
  one_class = np.zeros((B,), np.int32)                    # no negative pair: GOR and entropy have no term
  assert not np.isfinite(float(fn(embeddings, one_class, np.ones((B,), bool)))), name


@pytest.mark.parametrize("bad", BAD_PADDED, ids=str)
@pytest.mark.parametrize("name", REGULARIZERS)
def test_regularizer_padded_rows_holding_nonfinite_or_huge_values_change_nothing(name, bad):
  embeddings, labels = _batch(4)
  fn = jax.jit(jax.value_and_grad(_regularizers()[name]))
  padded, padded_labels, valid, real, rows = _padded(embeddings, labels, bad)
  value, grad = fn(padded, padded_labels, valid)
  benign_value, benign_grad = fn(*_padded(embeddings, labels, 0.5)[:3])
  grad = np.asarray(grad)
  assert np.isfinite(float(value)) and np.isfinite(grad).all(), f"{name}: {float(value)}"
  assert float(value) == float(benign_value)
  np.testing.assert_array_equal(grad, np.asarray(benign_grad))
  np.testing.assert_array_equal(grad[rows], 0.0)
  ref_value, ref_grad = fn(embeddings, labels, np.ones((B,), bool))
  np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad[real], np.asarray(ref_grad), rtol=1e-4, atol=1e-6)
