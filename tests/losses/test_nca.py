"""Tests of the NCA loss (Goldberger et al. 2004).

Reference values come from hand computation on 1-D embeddings and from pytorch-metric-learning's `NCALoss`.
Configuration of the reference: `LpDistance(power=2, normalize_embeddings=False)` (PML normalizes by default; NCA, and
metric_jax, use raw squared Euclidean distances). Both average `−log Σ_pos p_ij` over the queries that have a positive
(PML drops queries whose positive probability is exactly 0, which for finite distances are those without a positive).
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

from metric_jax import losses
from metric_jax.losses import nca

# x = (0, 1, 3) with labels (0, 0, 1): squared distances D01 = 1, D02 = 9, D12 = 4. Query 2 has no positive.
HAND_EMBEDDINGS = np.array([[0.0], [1.0], [3.0]], np.float32)
HAND_LABELS = np.array([0, 0, 1], np.int32)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_hand_computed(scale):
  # q0: p(pos) = e^{-s} / (e^{-s} + e^{-9s}) -> -log p = log(1 + e^{-8s}); q1: log(1 + e^{-3s}).
  expected = (math.log1p(math.exp(-8 * scale)) + math.log1p(math.exp(-3 * scale))) / 2
  value = losses.get("nca")(HAND_EMBEDDINGS, HAND_LABELS, softmax_scale=scale)
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_query_whose_keys_are_all_positive_contributes_zero():
  # Labels (0, 0, 0, 1): queries 0-2 have one negative; a batch of one class gives exactly 0.
  embeddings = np.array([[0.0], [1.0], [2.0], [5.0]], np.float32)
  value, grad = jax.value_and_grad(losses.get("nca"))(embeddings, np.zeros(4, np.int32))
  assert float(value) == 0.0 and np.abs(np.asarray(grad)).max() < 1e-7


def _pml_value_and_grad(embeddings, labels, scale):
  e = torch.tensor(embeddings, dtype=torch.float64, requires_grad=True)
  loss_fn = pml_losses.NCALoss(softmax_scale=scale,
                               distance=pml_distances.LpDistance(power=2, normalize_embeddings=False))
  loss = loss_fn(e, torch.tensor(labels, dtype=torch.long))
  loss.backward()
  return loss.item(), e.grad.numpy()


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_matches_pytorch_metric_learning(scale):
  rng = np.random.default_rng(int(scale))
  labels = rng.permutation(np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4, 5], np.int32))  # 3 and 5 are singletons
  embeddings = rng.normal(size=(labels.size, 5)) / 2
  expected_value, expected_grad = _pml_value_and_grad(embeddings, labels, scale)
  with jax.enable_x64(True):
    value, grad = jax.value_and_grad(lambda e: losses.get("nca")(e, jnp.asarray(labels), softmax_scale=scale))(
        jnp.asarray(embeddings))
  np.testing.assert_allclose(value, expected_value, rtol=1e-4)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-10)


def test_matrix_form_gradients_match_finite_differences():
  """check_grads (order 1, fwd and rev, float64) on a rectangular distance matrix with padded queries and keys."""
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    matrix = jnp.asarray(rng.uniform(0.0, 3.0, size=(5, 7)))
    query_labels = np.array([0, 1, 2, 0, 3], np.int32)
    key_labels = np.array([1, 0, 2, 3, 0, 2, 1], np.int32)
    query_valid = np.array([True, True, False, True, True])
    key_valid = np.array([True, True, True, True, False, True, True])
    loss = lambda m: nca.nca_loss(m, query_labels, key_labels, query_valid=query_valid, key_valid=key_valid,
                                  softmax_scale=2.0)
    jtu.check_grads(loss, (matrix,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_bad_softmax_scale_names_the_argument():
  with pytest.raises(ValueError, match="softmax_scale"):
    losses.get("nca")(HAND_EMBEDDINGS, HAND_LABELS, softmax_scale=0.0)
