"""Tests of the histogram loss (Ustinova & Lempitsky 2016).

Reference values come from hand computation on a written-out similarity matrix with 4 intervals (nodes −1, −0.5, 0,
0.5, 1) and from pytorch-metric-learning's `HistogramLoss(n_bins=num_bins)` (same node convention: `num_bins`
intervals, `num_bins + 1` nodes, Δ = 2/num_bins; cosine similarity as here). Convention differences: PML counts every
unordered pair once, metric_jax counts both orders in the square matrix, which gives the same normalized histograms;
PML takes negative pairs only from anchors that have a positive, so the cross-check uses P × K batches, where every
negative pair qualifies.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import test_util as jtu
from pytorch_metric_learning import losses as pml_losses

from metric_jax import labels as labels_lib, losses, pairwise
from metric_jax.losses import _shard, histogram

# Labels (0, 0, 1): positive 0.75; negatives 0.25 and −0.6.
# Node positions (s + 1)/Δ with Δ = 0.5: 0.75 -> 3.5 (0.5 to nodes 3 and 4); 0.25 -> 2.5 (0.5 to nodes 2 and 3);
# −0.6 -> 0.8 (0.2 to node 0, 0.8 to node 1). So h⁺ = (0, 0, 0, .5, .5), h⁻ = (.1, .4, .25, .25, 0),
# Φ⁺ = (0, 0, 0, .5, 1).
HAND_SIMILARITY = np.array([[1.0, 0.75, 0.25],
                            [0.75, 1.0, -0.6],
                            [0.25, -0.6, 1.0]], np.float32)
HAND_LABELS = np.array([0, 0, 1], np.int32)


@pytest.mark.parametrize("margin_bins,expected", [
    (0, 0.25 * 0.5),                      # Σ h⁻ Φ⁺
    (1, 0.25 * 0.5 + 0.25 * 1.0),         # Φ⁺ shifted by one node: (0, 0, .5, 1, 1)
    (2, 0.4 * 0.5 + 0.25 + 0.25),         # (0, .5, 1, 1, 1)
    (4, 1.0),                             # every negative penalized: Σ h⁻ = 1
])
def test_hand_computed(margin_bins, expected):
  value = histogram.histogram_loss(HAND_SIMILARITY, HAND_LABELS, num_bins=4, margin_bins=margin_bins)
  np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_histograms_hand_computed():
  mask = np.array([[False, False, True], [False, False, True], [True, True, False]])
  h, count = histogram.similarity_histogram(jnp.asarray(HAND_SIMILARITY), mask, num_bins=4)
  np.testing.assert_allclose(h, [0.1, 0.4, 0.25, 0.25, 0.0], atol=1e-7)
  assert int(count) == 4


def test_similarity_one_and_minus_one_land_on_the_end_nodes():
  s = np.array([[1.0, 1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]], np.float32)
  h, _ = histogram.similarity_histogram(jnp.asarray(s), ~np.eye(3, dtype=bool), num_bins=4)
  np.testing.assert_allclose(h, [4 / 6, 0, 0, 0, 2 / 6], atol=1e-7)
  # Positives at +1, negatives at −1: no reversal.
  assert float(histogram.histogram_loss(s, HAND_LABELS, num_bins=4)) == 0.0


def _pml_value_and_grad(embeddings, labels, num_bins):
  # PML multiplies its integer bin indices by Δ, which yields torch's *default* dtype: float64 here, or the float32
  # rounding of the node positions (~4e-7 in the histograms) would dominate the comparison.
  default_dtype = torch.get_default_dtype()
  torch.set_default_dtype(torch.float64)
  try:
    x = torch.tensor(embeddings, dtype=torch.float64, requires_grad=True)
    loss = pml_losses.HistogramLoss(n_bins=num_bins)(x, torch.tensor(labels, dtype=torch.long))
    loss.backward()
  finally:
    torch.set_default_dtype(default_dtype)
  return loss.item(), x.grad.numpy()


@pytest.mark.parametrize("num_bins", [10, 100])
def test_matches_pytorch_metric_learning(num_bins):
  rng = np.random.default_rng(num_bins)
  labels = rng.permutation(np.repeat(np.arange(4), 3).astype(np.int32))
  embeddings = rng.normal(size=(labels.size, 3))
  expected_value, expected_grad = _pml_value_and_grad(embeddings, labels, num_bins)
  with jax.enable_x64(True):
    fn = lambda x: losses.get("histogram")(x, jnp.asarray(labels), num_bins=num_bins)
    value, grad = jax.value_and_grad(fn)(jnp.asarray(embeddings))
  assert expected_value > 0
  np.testing.assert_allclose(value, expected_value, rtol=1e-4)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("margin_bins", [0, 2])
def test_matrix_form_gradients_match_finite_differences(margin_bins):
  """check_grads (order 1, fwd and rev, float64) on a rectangular similarity matrix with padded queries and keys."""
  rng = np.random.default_rng(8)
  with jax.enable_x64(True):
    matrix = jnp.asarray(rng.uniform(-0.9, 0.9, size=(5, 7)))
    query_labels = np.array([0, 1, 2, 0, 3], np.int32)
    key_labels = np.array([1, 0, 2, 3, 0, 2, 1], np.int32)
    query_valid = np.array([True, True, False, True, True])
    key_valid = np.array([True, True, True, True, False, True, True])
    loss = lambda m: histogram.histogram_loss(m, query_labels, key_labels, query_valid=query_valid,
                                              key_valid=key_valid, num_bins=10, margin_bins=margin_bins)
    assert float(loss(matrix)) > 0
    jtu.check_grads(loss, (matrix,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-5)


def _largest_intermediate(jaxpr):
  """Largest number of elements of any value computed in `jaxpr`, sub-jaxprs included."""
  largest = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      largest = max(largest, int(np.prod(getattr(var.aval, "shape", ()))))
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(sub, "jaxpr", None)
        if inner is not None:
          largest = max(largest, _largest_intermediate(getattr(inner, "jaxpr", inner)))
  return largest


def test_value_and_gradient_never_build_a_pairs_by_bins_tensor():
  b, num_bins = 32, 100
  fn = jax.value_and_grad(lambda x: losses.get("histogram")(x, jnp.arange(b) % 8, num_bins=num_bins))
  jaxpr = jax.make_jaxpr(fn)(jnp.ones((b, 4)))
  assert _largest_intermediate(jaxpr.jaxpr) <= 4 * b * b < b * b * (num_bins + 1)  # O(B²) pair weights only


@pytest.mark.parametrize("hparams,argument", [
    ({"num_bins": 0}, "num_bins"),
    ({"num_bins": 10.0}, "num_bins"),
    ({"margin_bins": -1}, "margin_bins"),
    ({"num_bins": 4, "margin_bins": 5}, "margin_bins"),
])
def test_bad_hyperparameters_name_the_argument(hparams, argument):
  with pytest.raises(ValueError, match=argument):
    losses.get("histogram")(np.eye(3, dtype=np.float32), HAND_LABELS, **hparams)


def _autodiff_reference(embeddings, labels, valid, num_bins, margin_bins):
  """The loss written directly on the full square matrix, differentiated by autodiff through the histograms."""
  e = embeddings / jnp.linalg.norm(embeddings, axis=1, keepdims=True)
  masks = labels_lib.pair_masks(labels, query_valid=valid)
  s = jnp.where(masks.valid, e @ e.T, 0.0)
  h_pos, _ = histogram.similarity_histogram(s, masks.positive, num_bins)
  h_neg, _ = histogram.similarity_histogram(s, masks.negative, num_bins)
  shifted = jnp.minimum(jnp.arange(num_bins + 1) + margin_bins, num_bins)
  return jnp.sum(h_neg * jnp.cumsum(h_pos)[shifted])


@pytest.mark.parametrize("multi_hot", [False, True])
def test_blocks_see_each_pair_once_and_equal_the_autodiff_reference(multi_hot):
  """Blocks with half windows (`PairProblem.map_pairs`: 3, 4, 6 and 8 global blocks, odd and even) and the plain
  blocks they fall back to (2 blocks; a remainder) give the value and gradient of the loss differentiated by autodiff
  on the full matrix, with padded rows holding garbage."""
  rng = np.random.default_rng(5)
  g, num_bins, margin_bins = 24, 12, 1
  embeddings = rng.normal(size=(g, 5)).astype(np.float32)
  valid = np.ones(g, bool)
  valid[[3, 17]] = False
  embeddings[3] = 1e6
  if multi_hot:
    labels = rng.random((g, 4)) < 0.3
  else:
    labels = (np.arange(g) % 6).astype(np.int32)
  ref_value, ref_grad = jax.value_and_grad(_autodiff_reference)(jnp.asarray(np.where(valid[:, None], embeddings, 1.0)),
                                                                labels, valid, num_bins, margin_bins)
  fn = losses.get("histogram")
  for block_size, windows in ((None, False), (12, False), (5, False), (8, True), (6, True), (4, True), (3, True)):
    problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=pairwise.cosine_similarity,
                                     block_size=block_size)
    assert (problem._pair_windows() is not None) == windows, block_size
    value, grad = jax.jit(jax.value_and_grad(
        lambda e: fn(e, labels, valid=valid, num_bins=num_bins, margin_bins=margin_bins, block_size=block_size)))(
            jnp.asarray(embeddings))
    assert float(ref_value) > 0
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, err_msg=f"block_size={block_size}")
    np.testing.assert_allclose(grad, np.where(valid[:, None], ref_grad, 0.0), rtol=1e-4,
                               atol=1e-6 * np.abs(ref_grad).max(), err_msg=f"block_size={block_size}")
