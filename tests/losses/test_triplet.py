"""Triplet loss: hand-computed values, an independent brute-force numpy loop, pytorch-metric-learning, gradients.

Reference conventions (pytorch-metric-learning 2.9.0), configured to match ours:
- distance `LpDistance(normalize_embeddings=False, p=2, power=1)` (its default normalizes the embeddings; we do not);
  `power=2` for `squared=True`;
- its default `AvgNonZeroReducer` = our `reduction="mean_nonzero"` (sum / number of triplets with loss > 0);
- `mining="all"` = `TripletMarginMiner(margin=m, type_of_triplets="all")` (keeps `D_an - D_ap <= m`, a superset of the
  triplets with loss > 0, so the reduced value is the same);
- `mining="hard"` = `BatchHardMiner()` (farthest positive and closest negative per anchor);
- `mining="semihard"` = `TripletMarginMiner(margin=m, type_of_triplets="semihard")`: every triplet with
  `0 < D_an - D_ap <= m`. FaceNet instead draws one semi-hard negative per anchor-positive pair, and TF-Addons takes the
  closest one with a fallback to the farthest negative; like the reference we keep them all and skip pairs with none.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu

from metric_jax import losses
from metric_jax.losses.triplet import triplet_loss

triplet = losses.get("triplet")


def _brute(emb, labels, margin, mining, soft, squared):
  """All selected triplet losses, one Python loop per (a, p, n)."""
  d = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
  if squared:
    d = d ** 2
  out = []
  n = len(labels)
  for a in range(n):
    pos = [j for j in range(n) if j != a and labels[j] == labels[a]]
    neg = [j for j in range(n) if labels[j] != labels[a]]
    if mining == "hard":
      if not pos or not neg:
        continue
      pairs = [(max(pos, key=lambda j: d[a, j]), min(neg, key=lambda j: d[a, j]))]
    else:
      pairs = [(p, q) for p in pos for q in neg]
    for p, q in pairs:
      if mining == "semihard" and not d[a, p] < d[a, q] < d[a, p] + margin:
        continue
      x = d[a, p] - d[a, q] + margin
      out.append(np.log1p(np.exp(x)) if soft else max(x, 0.0))
  return np.array(out)


def _reduce(terms, reduction):
  if reduction == "sum":
    return terms.sum()
  if reduction == "mean":
    return terms.mean() if terms.size else 0.0
  nonzero = (terms > 0).sum()
  return terms.sum() / nonzero if nonzero else 0.0


def test_hand_computed_values_on_four_points_on_a_line():
  # Points 0, 1 (class 0) and 3, 5 (class 1) on a line; margin 1, Euclidean distances.
  emb = jnp.array([[0.0], [1.0], [3.0], [5.0]])
  labels = jnp.array([0, 0, 1, 1])
  # Triplets (a, p, n): (0,1,2): 1-3+1=-1 -> 0; (0,1,3): 1-5+1 -> 0; (1,0,2): 1-2+1=0 -> 0; (1,0,3): 1-4+1 -> 0;
  # (2,3,0): 2-3+1=0; (2,3,1): 2-2+1=1; (3,2,0): 2-5+1 -> 0; (3,2,1): 2-4+1=-1 -> 0.  Sum 1, one non-zero, 8 triplets.
  assert float(triplet(emb, labels, margin=1.0, reduction="sum")) == pytest.approx(1.0)
  assert float(triplet(emb, labels, margin=1.0, reduction="mean")) == pytest.approx(1.0 / 8)
  assert float(triplet(emb, labels, margin=1.0)) == pytest.approx(1.0)
  # Batch-hard: each anchor has one positive; closest negatives: 0->2 (3), 1->2 (2), 2->1 (2), 3->1 (4).
  # Losses: 1-3+1=-1->0, 1-2+1=0, 2-2+1=1, 2-4+1=-1->0.  mean over 4 anchors = 0.25.
  assert float(triplet(emb, labels, margin=1.0, mining="hard", reduction="mean")) == pytest.approx(0.25)
  # Semi-hard, D_ap < D_an < D_ap + 1: none ((2,3,1) has D_an = D_ap = 2). Margin 2: (0,1,2):
  # 1<3<3 no; (1,0,2): 1<2<3 yes, loss 1-2+2 = 1; (2,3,1): 2<2 no; (3,2,1): 2<4<4 no; (2,3,0): 2<3<4 yes, loss 1.
  assert float(triplet(emb, labels, margin=1.0, mining="semihard", reduction="sum")) == pytest.approx(0.0)
  assert float(triplet(emb, labels, margin=2.0, mining="semihard", reduction="sum")) == pytest.approx(2.0)
  # Soft, squared, batch-hard, margin 0: softplus(D_ap^2 - D_an^2): anchors 0..3: 1-9, 1-4, 4-4, 4-16.
  expected = sum(np.log1p(np.exp(v)) for v in (-8.0, -3.0, 0.0, -12.0)) / 4
  value = triplet(emb, labels, margin=0.0, mining="hard", soft=True, squared=True, reduction="mean")
  assert float(value) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
def test_matches_brute_force_loop_for_every_option(mining):
  rng = np.random.default_rng(3)
  emb = rng.normal(size=(10, 3)) * 0.6
  labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 4])
  with jax.enable_x64(True):
    for soft, squared in itertools.product([False, True], [False, True]):
      reductions = ("sum", "mean", "mean_nonzero")
      got = jax.jit(lambda e, y: [triplet(e, y, margin=0.4, mining=mining, soft=soft, squared=squared, reduction=r)
                                  for r in reductions])(jnp.asarray(emb), jnp.asarray(labels))
      for reduction, value in zip(reductions, got):
        expected = _reduce(_brute(emb, labels, 0.4, mining, soft, squared), reduction)
        np.testing.assert_allclose(float(value), expected, rtol=1e-10, err_msg=f"{soft=} {squared=} {reduction=}")


def test_rectangular_matrix_with_self_offset_equals_the_square_rows():
  rng = np.random.default_rng(4)
  emb = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
  labels = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
  d = jnp.sqrt(jnp.maximum(jnp.sum((emb[:, None] - emb[None]) ** 2, -1), 0.0))
  full = triplet_loss(d, labels, mining="all", reduction="sum")
  top = triplet_loss(d[:4], labels[:4], labels, self_offset=0, reduction="sum")
  bottom = triplet_loss(d[4:], labels[4:], labels, self_offset=4, reduction="sum")
  np.testing.assert_allclose(float(top + bottom), float(full), rtol=1e-5)


@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
def test_gradients_match_finite_differences(mining):
  rng = np.random.default_rng(5)
  labels = jnp.array([0, 0, 0, 1, 1, 2, 2, 2])
  with jax.enable_x64(True):
    emb = jnp.asarray(rng.normal(size=(8, 3)))
    for soft in (False, True):
      jtu.check_grads(jax.jit(lambda e: triplet(e, labels, margin=0.5, mining=mining, soft=soft)), (emb,), order=1,
                      modes=("fwd", "rev"))


@pytest.mark.parametrize("mining,squared", [("all", False), ("hard", False), ("semihard", False), ("all", True)])
def test_agrees_with_pytorch_metric_learning(mining, squared):
  torch = pytest.importorskip("torch")
  from pytorch_metric_learning import distances, losses as pml_losses, miners

  rng = np.random.default_rng(6)
  emb = rng.normal(size=(16, 4)) * 0.5
  labels = np.repeat(np.arange(4), 4)
  margin = 0.3
  distance = distances.LpDistance(normalize_embeddings=False, p=2, power=2 if squared else 1)
  if mining == "hard":
    miner = miners.BatchHardMiner(distance=distance)
  else:
    miner = miners.TripletMarginMiner(margin=margin, type_of_triplets=mining, distance=distance)
  loss_fn = pml_losses.TripletMarginLoss(margin=margin, distance=distance)
  t_emb = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
  t_labels = torch.tensor(labels)
  ref = loss_fn(t_emb, t_labels, miner(t_emb, t_labels))
  ref.backward()
  ref = ref.detach()
  with jax.enable_x64(True):
    value, grad = jax.value_and_grad(lambda e: triplet(e, jnp.asarray(labels), margin=margin, mining=mining,
                                                       squared=squared))(jnp.asarray(emb))
  assert float(ref) > 0
  np.testing.assert_allclose(float(value), float(ref), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(grad), t_emb.grad.numpy(), rtol=1e-4, atol=1e-10)


def test_soft_all_triplets_agrees_with_pytorch_metric_learning_smooth_loss():
  torch = pytest.importorskip("torch")
  from pytorch_metric_learning import distances, losses as pml_losses

  rng = np.random.default_rng(7)
  emb = rng.normal(size=(12, 4))
  labels = np.repeat(np.arange(4), 3)
  distance = distances.LpDistance(normalize_embeddings=False)
  loss_fn = pml_losses.TripletMarginLoss(margin=0.2, smooth_loss=True, distance=distance)
  t_emb = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
  ref = loss_fn(t_emb, torch.tensor(labels))
  ref.backward()
  ref = ref.detach()
  with jax.enable_x64(True):
    value, grad = jax.value_and_grad(lambda e: triplet(e, jnp.asarray(labels), margin=0.2, soft=True))(
        jnp.asarray(emb))
  np.testing.assert_allclose(float(value), float(ref), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(grad), t_emb.grad.numpy(), rtol=1e-4, atol=1e-10)


def test_bad_hyperparameters_name_the_argument():
  emb = jnp.ones((4, 2))
  labels = jnp.array([0, 0, 1, 1])
  with pytest.raises(ValueError, match="mining"):
    triplet(emb, labels, mining="easy")
  with pytest.raises(ValueError, match="reduction"):
    triplet(emb, labels, reduction="avg")
  with pytest.raises(ValueError, match="margin"):
    triplet(emb, labels, margin=-1.0)
  with pytest.raises(TypeError, match="soft"):
    triplet(emb, labels, soft="yes")
  with pytest.raises(TypeError, match="squared"):
    triplet(emb, labels, squared=1)


# Positive-slot layout: with 2 slots, FEW has at most 2 positives per anchor (slot path), MANY has an anchor with 4
# (the `lax.cond` must take the sorted / tiled fallback). Both are compared with the brute-force loop and with the
# slot path disabled (`positive_slots=0`), values and gradients.
FEW = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 4])
MANY = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 3])
_OPTIONS = list(itertools.product([False, True], [False, True], ["sum", "mean", "mean_nonzero"]))


@pytest.mark.parametrize("mining", ["all", "semihard"])
def test_positive_slot_path_equals_sorted_path_and_brute_force(mining):
  rng = np.random.default_rng(8)
  emb = rng.normal(size=(10, 3)) * 0.6
  reductions = ("sum", "mean", "mean_nonzero")
  with jax.enable_x64(True):
    for soft, squared in itertools.product([False, True], [False, True]):
      kw = dict(margin=0.4, mining=mining, soft=soft, squared=squared)

      # One compiled function per (soft, squared): every reduction, slot path and slot path disabled.
      @jax.jit
      def both_paths(e, y):
        return [jax.value_and_grad(lambda e: triplet(e, y, positive_slots=slots, reduction=r, **kw))(e)
                for r in reductions for slots in (2, 0)]

      for labels in (FEW, MANY):
        results = both_paths(jnp.asarray(emb), jnp.asarray(labels))
        for k, reduction in enumerate(reductions):
          (v1, g1), (v2, g2) = results[2 * k], results[2 * k + 1]
          expected = _reduce(_brute(emb, labels, 0.4, mining, soft, squared), reduction)
          msg = f"{soft=} {squared=} {reduction=} labels={labels}"
          np.testing.assert_allclose(float(v1), expected, rtol=1e-10, atol=1e-12, err_msg=msg)
          np.testing.assert_allclose(float(v2), expected, rtol=1e-10, atol=1e-12, err_msg=msg)
          np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-9, atol=1e-12, err_msg=msg)


def test_positive_slot_gradient_matches_brute_force_finite_differences():
  rng = np.random.default_rng(9)
  emb = rng.normal(size=(10, 3)) * 0.6
  h = 1e-6
  with jax.enable_x64(True):
    for mining, soft in (("all", False), ("semihard", False), ("all", True)):
      grad = jax.grad(lambda e: triplet(e, jnp.asarray(FEW), margin=0.4, mining=mining, soft=soft, reduction="sum",
                                        positive_slots=2))(jnp.asarray(emb))
      numeric = np.zeros_like(emb)
      for i, j in itertools.product(range(emb.shape[0]), range(emb.shape[1])):
        up, down = emb.copy(), emb.copy()
        up[i, j] += h
        down[i, j] -= h
        numeric[i, j] = (_brute(up, FEW, 0.4, mining, soft, False).sum()
                         - _brute(down, FEW, 0.4, mining, soft, False).sum()) / (2 * h)
      np.testing.assert_allclose(np.asarray(grad), numeric, rtol=1e-5, atol=1e-7, err_msg=f"{mining} {soft=}")


def test_slot_path_alone_would_drop_positives_beyond_its_slots():
  """Shows the fallback in the test above is needed: the slot sums alone miss the MANY batch's extra positives."""
  from metric_jax import labels as labels_lib, mining as mining_lib
  from metric_jax.losses import triplet as triplet_module
  rng = np.random.default_rng(8)
  emb = jnp.asarray(rng.normal(size=(10, 3)) * 0.6)
  d = jnp.sqrt(jnp.sum((emb[:, None] - emb[None]) ** 2, -1) + jnp.eye(10))
  masks = labels_lib.pair_masks(jnp.asarray(MANY))
  window = mining_lib.all_triplets(d, masks.positive, masks.negative)
  assert int(mining_lib.max_positives(window)) == 4
  truncated = triplet_module._slot_totals(d, window, 0.4, False, 2, False)[0]
  full = triplet_module._slot_totals(d, window, 0.4, False, 4, False)[0]
  assert float(truncated) < float(full)


def _array_sizes(jaxpr):
  """Shapes of every value in a jaxpr, including the branches of `cond` and the bodies of loops."""
  shapes = []
  for eqn in jaxpr.eqns:
    shapes += [tuple(v.aval.shape) for v in eqn.outvars]
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
          shapes += _array_sizes(sub.jaxpr)
        elif hasattr(sub, "eqns"):
          shapes += _array_sizes(sub)
  return shapes


@pytest.mark.parametrize("hparams", [dict(mining="all"), dict(mining="semihard"), dict(soft=True)])
def test_no_cubic_buffer_at_batch_256_with_8_slots(hparams):
  batch = 256
  emb = jnp.asarray(np.random.default_rng(0).normal(size=(batch, 8)), jnp.float32)
  labels = jnp.asarray(np.repeat(np.arange(batch // 4), 4))
  fn = jax.value_and_grad(lambda e: triplet(e, labels, positive_slots=8, **hparams))
  shapes = _array_sizes(jax.make_jaxpr(fn)(emb).jaxpr)
  assert (batch, 8) in shapes                                          # the slot path ([B, S] slot indices) is there
  assert max(int(np.prod(s)) for s in shapes) <= 8 * batch * batch     # nothing of B^3 = 32 x that
  temp = jax.jit(fn).lower(emb).compile().memory_analysis().temp_size_in_bytes
  assert temp < batch ** 3 * 4 / 4, temp                               # a float32 [B, B, B] buffer is 64 MiB
