"""Tests of the lifted structured loss (Song et al. 2016) and the generalized lifted structure loss (Hermans et al. 2017).

Reference values come from hand computation of Song's Eq. 4 / Hermans' form on 1-D embeddings (distances are absolute
differences) and from pytorch-metric-learning.

Configuration and convention differences with pytorch-metric-learning:
- Both references get `LpDistance(normalize_embeddings=False)` (plain Euclidean distance; PML normalizes by default).
- `LiftedStructureLoss(neg_margin=α, pos_margin=0)` is Song's form exactly: PML sums `[J_ij]₊² / 2` over ordered positive
  pairs and averages over them, which equals Song's `1/(2|P|) Σ_{unordered}`; metric_jax counts ordered pairs as well.
- `GeneralizedLiftedStructureLoss(neg_margin, pos_margin)` averages over *all* anchors, and an anchor without positives
  still contributes its hinged negative term there; metric_jax averages over anchors with both a positive and a
  negative (an empty log-sum is −inf, so such an anchor has no term). The cross-check uses batches in which every anchor
  has both, where the two agree; the difference is tested by hand below.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import test_util as jtu
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses

from metric_jax import losses, pairwise
from metric_jax.losses import lifted

# x = (0, 1, 3, 3.5), labels (0, 0, 1, 1): D01 = 1, D02 = 3, D03 = 3.5, D12 = 2, D13 = 2.5, D23 = 0.5.
HAND_EMBEDDINGS = np.array([[0.0], [1.0], [3.0], [3.5]], np.float32)
HAND_LABELS = np.array([0, 0, 1, 1], np.int32)
e = math.exp


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_lifted_structure_hand_computed(margin):
  a = margin
  # P = {(0, 1), (2, 3)}; N(0) = N(1) = {2, 3}, N(2) = N(3) = {0, 1}.
  j01 = math.log(e(a - 3) + e(a - 3.5) + e(a - 2) + e(a - 2.5)) + 1.0
  j23 = math.log(e(a - 3) + e(a - 2) + e(a - 3.5) + e(a - 2.5)) + 0.5
  expected = (max(j01, 0) ** 2 + max(j23, 0) ** 2) / (2 * 2)
  value = losses.get("lifted_structure")(HAND_EMBEDDINGS, HAND_LABELS, margin=margin)
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_lifted_structure_hand_computed_with_a_singleton():
  # x = (0, 1, 3), labels (0, 0, 1): one positive pair; N(0) = {2} (D = 3), N(1) = {2} (D = 2).
  embeddings, labels = HAND_EMBEDDINGS[:3], HAND_LABELS[:3]
  j01 = math.log(e(1 - 3) + e(1 - 2)) + 1.0
  np.testing.assert_allclose(losses.get("lifted_structure")(embeddings, labels), j01 ** 2 / 2, rtol=1e-5)


@pytest.mark.parametrize("pos_margin,neg_margin", [(0.0, 1.0), (0.5, 3.0)])
def test_generalized_lifted_structure_hand_computed(pos_margin, neg_margin):
  pm, nm = pos_margin, neg_margin
  per_anchor = [
      (1.0 - pm) + math.log(e(nm - 3) + e(nm - 3.5)),    # anchor 0: positive 1, negatives 2, 3
      (1.0 - pm) + math.log(e(nm - 2) + e(nm - 2.5)),    # anchor 1
      (0.5 - pm) + math.log(e(nm - 3) + e(nm - 2)),      # anchor 2: positive 3, negatives 0, 1
      (0.5 - pm) + math.log(e(nm - 3.5) + e(nm - 2.5)),  # anchor 3
  ]
  expected = sum(max(v, 0.0) for v in per_anchor) / 4
  value = losses.get("generalized_lifted_structure")(HAND_EMBEDDINGS, HAND_LABELS, pos_margin=pos_margin,
                                                     neg_margin=neg_margin)
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_generalized_lifted_structure_averages_over_anchors_with_both_kinds_of_pair():
  # x = (0, 1, 3), labels (0, 0, 1), neg_margin 3: anchor 2 has no positive and is left out of the mean.
  per_anchor = [1.0 + math.log(e(3 - 3)), 1.0 + math.log(e(3 - 2))]
  value = losses.get("generalized_lifted_structure")(HAND_EMBEDDINGS[:3], HAND_LABELS[:3], neg_margin=3.0)
  np.testing.assert_allclose(value, sum(per_anchor) / 2, rtol=1e-5)


def _pml_value_and_grad(loss_fn, embeddings, labels):
  x = torch.tensor(embeddings, dtype=torch.float64, requires_grad=True)
  loss = loss_fn(x, torch.tensor(labels, dtype=torch.long))
  loss.backward()
  return loss.item(), x.grad.numpy()


def _jax_value_and_grad(name, embeddings, labels, **hparams):
  with jax.enable_x64(True):
    fn = lambda x: losses.get(name)(x, jnp.asarray(labels), **hparams)
    return jax.value_and_grad(fn)(jnp.asarray(embeddings))


@pytest.mark.parametrize("margin", [1.0, 2.0])
def test_lifted_structure_matches_pytorch_metric_learning(margin):
  rng = np.random.default_rng(int(margin))
  labels = rng.permutation(np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4], np.int32))  # 3 is a singleton
  embeddings = rng.normal(size=(labels.size, 4)) * 0.6
  reference = pml_losses.LiftedStructureLoss(neg_margin=margin, pos_margin=0,
                                             distance=pml_distances.LpDistance(normalize_embeddings=False))
  expected_value, expected_grad = _pml_value_and_grad(reference, embeddings, labels)
  value, grad = _jax_value_and_grad("lifted_structure", embeddings, labels, margin=margin)
  assert expected_value > 0
  np.testing.assert_allclose(value, expected_value, rtol=1e-4)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("pos_margin,neg_margin", [(0.0, 1.0), (0.2, 2.0)])
def test_generalized_lifted_structure_matches_pytorch_metric_learning(pos_margin, neg_margin):
  rng = np.random.default_rng(7)
  labels = rng.permutation(np.repeat(np.arange(4), 3).astype(np.int32))  # every anchor has positives and negatives
  embeddings = rng.normal(size=(labels.size, 4)) * 0.6
  reference = pml_losses.GeneralizedLiftedStructureLoss(
      neg_margin=neg_margin, pos_margin=pos_margin, distance=pml_distances.LpDistance(normalize_embeddings=False))
  expected_value, expected_grad = _pml_value_and_grad(reference, embeddings, labels)
  value, grad = _jax_value_and_grad("generalized_lifted_structure", embeddings, labels, pos_margin=pos_margin,
                                    neg_margin=neg_margin)
  assert expected_value > 0
  np.testing.assert_allclose(value, expected_value, rtol=1e-4)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("fn", [lifted.lifted_structure_loss, lifted.generalized_lifted_structure_loss])
def test_matrix_form_gradients_match_finite_differences(fn):
  """check_grads (order 1, fwd and rev, float64) on a rectangular distance matrix with padded queries and keys."""
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    matrix = jnp.asarray(rng.uniform(0.2, 2.0, size=(5, 7)))
    query_labels = np.array([0, 1, 2, 0, 3], np.int32)
    key_labels = np.array([1, 0, 2, 3, 0, 2, 1], np.int32)
    query_valid = np.array([True, True, False, True, True])
    key_valid = np.array([True, True, True, True, False, True, True])
    loss = lambda m: fn(m, query_labels, key_labels, query_valid=query_valid, key_valid=key_valid)
    assert float(loss(matrix)) > 0
    jtu.check_grads(loss, (matrix,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_rectangular_lifted_uses_the_key_columns_negatives():
  """Matrix form, queries ≠ keys: N(j) of key j are the queries with another label (column j)."""
  d = np.array([[0.5, 2.0, 1.0],
                [1.5, 0.7, 3.0]], np.float32)
  query_labels, key_labels = np.array([0, 1], np.int32), np.array([0, 1, 1], np.int32)
  # Positives: (q0, k0) and (q1, k1), (q1, k2). N(q0) = {k1, k2}; N(q1) = {k0}; N(k0) = {q1}; N(k1) = N(k2) = {q0}.
  j00 = math.log(e(1 - 2.0) + e(1 - 1.0) + e(1 - 1.5)) + 0.5
  j11 = math.log(e(1 - 1.5) + e(1 - 2.0)) + 0.7
  j12 = math.log(e(1 - 1.5) + e(1 - 1.0)) + 3.0
  expected = (j00 ** 2 + j11 ** 2 + j12 ** 2) / (2 * 3)
  value = lifted.lifted_structure_loss(d, query_labels, key_labels, self_offset=None)
  np.testing.assert_allclose(value, expected, rtol=1e-5)


@pytest.mark.parametrize("kind", ["pk", "large_classes", "multi_hot"])
def test_symmetric_form_equals_the_two_pass_matrix_form(kind):
  """`lifted_structure` without memory (`_lifted_symmetric`: row sums as column sums, its gradient formed explicitly,
  with the column term moved to the transposed entry) equals the general two-pass matrix form on the same distances,
  value and gradient (float64), unblocked and blocked, with padded rows: PK labels (the pair terms on each row's
  positive slots), classes larger than the slots (on every pair) and multi-hot labels (no label candidates)."""
  rng = np.random.default_rng(11)
  num = 30
  if kind == "pk":
    labels = rng.permutation(np.repeat(np.arange(10), 3)).astype(np.int32)
  elif kind == "large_classes":
    labels = rng.permutation(np.repeat(np.arange(2), 15)).astype(np.int32)      # 14 positives per anchor
  else:
    labels = (rng.random((num, 4)) < 0.3).astype(np.int32)
  valid = np.arange(num) < 27
  with jax.enable_x64(True):
    embeddings = jnp.asarray(rng.normal(size=(num, 5)) * 0.5)
    reference = jax.value_and_grad(lambda e: lifted.lifted_structure_loss(
        pairwise.euclidean(e), labels, query_valid=valid, margin=1.5))(embeddings)
    assert float(reference[0]) > 0
    for block_size in (None, 8):
      value, grad = jax.jit(jax.value_and_grad(lambda e: losses.get("lifted_structure")(
          e, labels, valid=valid, margin=1.5, block_size=block_size)))(embeddings)
      np.testing.assert_allclose(value, reference[0], rtol=1e-10)
      np.testing.assert_allclose(grad, reference[1], rtol=1e-8, atol=1e-12)


def test_bad_margin_names_the_argument():
  with pytest.raises(ValueError, match="margin"):
    losses.get("lifted_structure")(HAND_EMBEDDINGS, HAND_LABELS, margin=-1.0)
