"""Tests of the multi-similarity loss (Wang et al. 2019), with and without ε-mining and the "+1".

Reference values come from hand computation on a written-out 4 × 4 similarity matrix (matrix form) and from
pytorch-metric-learning's `MultiSimilarityLoss(alpha, beta, base)` (cosine similarity, as here), alone and with
`MultiSimilarityMiner(epsilon)` for the ε-mining. Convention difference: PML keeps the one-sided term of an anchor that
has only positives or only negatives; metric_jax gives such an anchor no term (so a batch without positive or negative
pairs has loss 0). The cross-check uses P × K batches where every anchor has both, and the ε-miner always mines both or
neither; the difference is tested by hand below. Both average over all (valid) anchors.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import test_util as jtu
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from metric_jax import losses
from metric_jax.losses import multi_similarity as ms

# Labels (0, 0, 1, 1). With ε = 0.1 the mining keeps: anchor 0 -> positive 1, negative 2; anchor 1 -> positive 0,
# negative 3; anchors 2 and 3 -> nothing (their positive, 0.85, is more than ε above every negative).
HAND_SIMILARITY = np.array([[1.0, 0.6, 0.7, 0.2],
                            [0.6, 1.0, 0.3, 0.55],
                            [0.7, 0.3, 1.0, 0.85],
                            [0.2, 0.55, 0.85, 1.0]], np.float32)
HAND_LABELS = np.array([0, 0, 1, 1], np.int32)
e, log = math.exp, math.log


def _term(similarities, scale, sign, plus_one):
  """1/scale · log([1 +] Σ exp(sign · scale · (s − 0.5)))."""
  total = sum(e(sign * scale * (s - 0.5)) for s in similarities)
  return log((1.0 if plus_one else 0.0) + total) / scale


def _hand(mining, plus_one):
  if mining:
    sets = [([0.6], [0.7]), ([0.6], [0.55])]
  else:
    sets = [([0.6], [0.7, 0.2]), ([0.6], [0.3, 0.55]), ([0.85], [0.7, 0.3]), ([0.85], [0.2, 0.55])]
  per_anchor = [_term(p, 2.0, -1, plus_one) + _term(n, 50.0, 1, plus_one) for p, n in sets]
  return sum(per_anchor) / 4  # mean over all 4 anchors; unmined ones add 0


@pytest.mark.parametrize("mining", [False, True])
@pytest.mark.parametrize("plus_one", [True, False])
def test_hand_computed(mining, plus_one):
  value = ms.multi_similarity_loss(HAND_SIMILARITY, HAND_LABELS, mining=mining, plus_one=plus_one)
  np.testing.assert_allclose(value, _hand(mining, plus_one), rtol=1e-5)


def test_anchor_with_only_positives_has_no_term():
  # Labels (0, 0, 1): anchor 2 has no positive, anchors 0, 1 each have positive 0.6 and negative 0.7 / 0.3.
  s = HAND_SIMILARITY[:3, :3]
  expected = (_term([0.6], 2, -1, True) + _term([0.7], 50, 1, True)
              + _term([0.6], 2, -1, True) + _term([0.3], 50, 1, True)) / 3
  value = ms.multi_similarity_loss(s, np.array([0, 0, 1], np.int32), mining=False)
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def _pml_value_and_grad(embeddings, labels, mining, alpha, beta, base):
  x = torch.tensor(embeddings, dtype=torch.float64, requires_grad=True)
  t = torch.tensor(labels, dtype=torch.long)
  loss_fn = pml_losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
  pairs = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, t) if mining else None
  loss = loss_fn(x, t, pairs)
  loss.backward()
  return loss.item(), x.grad.numpy()


@pytest.mark.parametrize("mining", [False, True])
@pytest.mark.parametrize("alpha,beta,base", [(2.0, 50.0, 0.5), (1.0, 10.0, 0.2)])
def test_matches_pytorch_metric_learning(mining, alpha, beta, base):
  rng = np.random.default_rng(11)
  labels = rng.permutation(np.repeat(np.arange(4), 4).astype(np.int32))
  embeddings = rng.normal(size=(labels.size, 6))
  embeddings[labels == 1] += 1.0  # some structure, so the mining keeps a strict subset
  expected_value, expected_grad = _pml_value_and_grad(embeddings, labels, mining, alpha, beta, base)
  with jax.enable_x64(True):
    fn = lambda x: losses.get("multi_similarity")(x, jnp.asarray(labels), mining=mining, alpha=alpha, beta=beta,
                                                  base=base)
    value, grad = jax.value_and_grad(fn)(jnp.asarray(embeddings))
  assert expected_value > 0
  np.testing.assert_allclose(value, expected_value, rtol=1e-4)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("mining,plus_one", [(True, True), (False, False)])
def test_matrix_form_gradients_match_finite_differences(mining, plus_one):
  """check_grads (order 1, fwd and rev, float64) on a rectangular similarity matrix with padded queries and keys."""
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    matrix = jnp.asarray(rng.uniform(-0.5, 1.0, size=(5, 7)))
    query_labels = np.array([0, 1, 2, 0, 3], np.int32)
    key_labels = np.array([1, 0, 2, 3, 0, 2, 1], np.int32)
    query_valid = np.array([True, True, False, True, True])
    key_valid = np.array([True, True, True, True, False, True, True])
    loss = lambda m: ms.multi_similarity_loss(m, query_labels, key_labels, query_valid=query_valid,
                                              key_valid=key_valid, beta=10.0, mining=mining, plus_one=plus_one)
    jtu.check_grads(loss, (matrix,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("hparams,argument,error", [
    ({"alpha": 0.0}, "alpha", ValueError),
    ({"beta": -1.0}, "beta", ValueError),
    ({"epsilon": -0.1}, "epsilon", ValueError),
    ({"mining": "yes"}, "mining", TypeError),
    ({"plus_one": 1}, "plus_one", TypeError),
])
def test_bad_hyperparameters_name_the_argument(hparams, argument, error):
  with pytest.raises(error, match=argument):
    losses.get("multi_similarity")(np.eye(4, dtype=np.float32), HAND_LABELS, **hparams)
