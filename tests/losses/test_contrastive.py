"""Contrastive loss and PairNet PLoss: hand values, the PairNet Eq. 4 identity, pytorch-metric-learning, gradients.

Reference conventions (pytorch-metric-learning 2.9.0 `ContrastiveLoss`): distance
`LpDistance(normalize_embeddings=False)` (its default normalizes, we do not); terms `[D - pos_margin]_+` and
`[neg_margin - D]_+` (no square); default `AvgNonZeroReducer` applied to the positive and the negative sub-loss
separately and the two summed = our `reduction="mean_nonzero"`. Every ordered pair counts once in both libraries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu

from metric_jax import losses, pairwise
from metric_jax.losses.contrastive import contrastive_loss, pairnet_loss

contrastive = losses.get("contrastive")
pairnet = losses.get("pairnet")

# Three points on a line: 0 and 1 (class 0), 3 (class 1).  Ordered pairs: positives (0,1),(1,0) at distance 1;
# negatives (0,2),(2,0) at 3 and (1,2),(2,1) at 2.
EMB = jnp.array([[0.0], [1.0], [3.0]])
LABELS = jnp.array([0, 0, 1])


def test_hand_computed_contrastive_values():
  # pos_margin 0.5, neg_margin 2.5: positive terms 0.5 (x2); negative terms [2.5-3]_+ = 0 (x2), [2.5-2]_+ = 0.5 (x2).
  kw = dict(pos_margin=0.5, neg_margin=2.5)
  assert float(contrastive(EMB, LABELS, reduction="sum", **kw)) == pytest.approx(2.0)
  assert float(contrastive(EMB, LABELS, reduction="mean", **kw)) == pytest.approx(2.0 / 6)
  assert float(contrastive(EMB, LABELS, **kw)) == pytest.approx(0.5 + 0.5)   # mean of non-zero pos + of non-zero neg
  # Hadsell's squared form with margin 2.5 on plain distances: 1/2 D^2 = 0.5 (x2); 1/2 [2.5 - D]_+^2 = 0, 0.125 (x2).
  got = contrastive(EMB, LABELS, neg_margin=2.5, hinge_power=2, reduction="sum")
  assert float(got) == pytest.approx(2 * 0.5 + 2 * 0.125)
  # Squared distances: positives D^2 = 1, negatives D^2 = 9, 4; neg_margin 5: [5-4]_+ = 1 (x2).
  got = contrastive(EMB, LABELS, distance="squared_euclidean", neg_margin=5.0, reduction="sum")
  assert float(got) == pytest.approx(2 * 1.0 + 2 * 1.0)


def test_hand_computed_pairnet_values():
  # D^2: positives 1 (x2), negatives 9 (x2), 4 (x2).  b = 0.5, m = 2: positives max(0, 0.5 - (2 - 1)) = 0;
  # negatives max(0, 0.5 + 2 - D^2): 9 -> 0, 4 -> 0.  b = 1.5, m = 2: positives max(0, 1.5 - 1) = 0.5;
  # negatives 3.5 - 9 -> 0, 3.5 - 4 -> 0.  b = 2, m = 3: positives 2 - 2 = 0; negatives 5 - 9 -> 0, 5 - 4 = 1.
  assert float(pairnet(EMB, LABELS, b=0.5, m=2.0)) == pytest.approx(0.0)
  assert float(pairnet(EMB, LABELS, b=1.5, m=2.0)) == pytest.approx(2 * 0.5 / 6)
  assert float(pairnet(EMB, LABELS, b=2.0, m=3.0)) == pytest.approx(2 * 1.0 / 6)


@pytest.mark.parametrize("m", [0.5, 1.0, 3.0])
def test_pairnet_with_b_equal_m_is_contrastive_with_margin_2m_on_squared_distances(m):
  """PairNet Eq. 4: b = m gives D^2 for positives and [2m - D^2]_+ for negatives (values and gradients)."""
  rng = np.random.default_rng(0)
  emb = jnp.asarray(rng.normal(size=(12, 5)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, size=12))
  plain = lambda e: pairnet(e, labels, b=m, m=m)
  contr = lambda e: contrastive(e, labels, distance="squared_euclidean", pos_margin=0.0, neg_margin=2 * m,
                                reduction="mean")
  v1, g1 = jax.value_and_grad(plain)(emb)
  v2, g2 = jax.value_and_grad(contr)(emb)
  np.testing.assert_allclose(float(v1), float(v2), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-5, atol=1e-7)


def test_matrix_form_matches_numpy_for_random_rectangular_inputs():
  rng = np.random.default_rng(1)
  d = rng.uniform(0, 2, size=(5, 9))
  q_labels = rng.integers(0, 3, size=5)
  k_labels = rng.integers(0, 3, size=9)
  key_valid = rng.uniform(size=9) > 0.2
  pos = (q_labels[:, None] == k_labels[None]) & key_valid[None]
  neg = (q_labels[:, None] != k_labels[None]) & key_valid[None]
  pos_terms = np.maximum(d - 0.3, 0)[pos]
  neg_terms = np.maximum(1.2 - d, 0)[neg]
  expected = pos_terms[pos_terms > 0].mean() + neg_terms[neg_terms > 0].mean()
  with jax.enable_x64(True):
    got = contrastive_loss(jnp.asarray(d), jnp.asarray(q_labels), jnp.asarray(k_labels),
                           key_valid=jnp.asarray(key_valid),
                           pos_margin=0.3, neg_margin=1.2)
  np.testing.assert_allclose(float(got), expected, rtol=1e-12)


@pytest.mark.parametrize("hinge_power,distance,reduction", [(1, "euclidean", "mean_nonzero"),
                                                          (2, "squared_euclidean", "mean"), (1, "euclidean", "sum")])
def test_gradients_match_finite_differences(hinge_power, distance, reduction):
  rng = np.random.default_rng(2)
  labels = jnp.array([0, 0, 1, 1, 2, 2, 0])
  with jax.enable_x64(True):
    emb = jnp.asarray(rng.normal(size=(7, 3)) * 0.5)
    jtu.check_grads(jax.jit(lambda e: contrastive(e, labels, distance=distance, pos_margin=0.1, neg_margin=1.0,
                                          hinge_power=hinge_power, reduction=reduction)), (emb,), order=1,
                    modes=("fwd", "rev"))
    jtu.check_grads(jax.jit(lambda e: pairnet(e, labels, b=0.3, m=1.0)), (emb,), order=1, modes=("fwd", "rev"))


def test_agrees_with_pytorch_metric_learning():
  torch = pytest.importorskip("torch")
  from pytorch_metric_learning import distances, losses as pml_losses

  rng = np.random.default_rng(3)
  emb = rng.normal(size=(16, 4)) * 0.4
  labels = np.repeat(np.arange(4), 4)
  loss_fn = pml_losses.ContrastiveLoss(pos_margin=0.2, neg_margin=1.0,
                                       distance=distances.LpDistance(normalize_embeddings=False))
  t_emb = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
  ref = loss_fn(t_emb, torch.tensor(labels))
  ref.backward()
  with jax.enable_x64(True):
    value, grad = jax.value_and_grad(lambda e: contrastive(e, jnp.asarray(labels), pos_margin=0.2, neg_margin=1.0))(
        jnp.asarray(emb))
  assert float(ref.detach()) > 0
  np.testing.assert_allclose(float(value), float(ref.detach()), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(grad), t_emb.grad.numpy(), rtol=1e-4, atol=1e-10)


def test_bad_hyperparameters_name_the_argument():
  with pytest.raises(ValueError, match="reduction"):
    contrastive(EMB, LABELS, reduction="avg")
  with pytest.raises(ValueError, match="hinge_power"):
    contrastive(EMB, LABELS, hinge_power=3)
  with pytest.raises(ValueError, match="distance"):
    contrastive(EMB, LABELS, distance="dot")
  with pytest.raises(ValueError, match="`b`"):
    pairnet(EMB, LABELS, b=2.0, m=1.0)
  with pytest.raises(ValueError, match="`m`"):
    pairnet(EMB, LABELS, b=0.0, m=0.0)
  with pytest.raises(ValueError, match="sq_distance"):
    pairnet_loss(jnp.ones((3,)), LABELS)
