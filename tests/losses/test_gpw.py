"""GPW pair / triplet forms (S1): every mining x weighting x normalization against a brute-force numpy loop, the sorted
(prefix-sum) and tiled methods against each other, gradients equal to the GPW weights, check_grads, square variants.

The reference loop enumerates pairs and triplets one by one and evaluates the GPW potential of `metric_jax.losses.gpw`
(whose gradient with respect to each selected violation x is its weight):
  none:       constant sum x;  power sum x^(p+1)/(p+1);  exponential sum (e^{a x} - 1)/a
  per group:  constant sum x/(c+n);  power (c + sum x^(p+1))^(1/(p+1)) - c^(1/(p+1));
              exponential log(c + sum e^{a x})/a
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu

from metric_jax import losses, weighting
from metric_jax.losses.gpw import gpw_pair_loss, gpw_triplet_loss

MARGIN, T1, T2, EPS, P, ALPHA, BETA = 0.3, 0.4, 1.1, 0.1, 2.0, 1.5, 2.5


def _data(seed=0, n=10):
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(n, 3)) * 0.5
  labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])[:n]
  d = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
  return emb, labels, d


def _pairs(d, labels, a):
  n = len(labels)
  return ([j for j in range(n) if j != a and labels[j] == labels[a]], [j for j in range(n) if labels[j] != labels[a]])


def _mine_pairs(d, labels, a, mining):
  pos, neg = _pairs(d, labels, a)
  if mining == "threshold":
    return [j for j in pos if d[a, j] > T1], [k for k in neg if d[a, k] < T2]
  if not pos or not neg:
    return ([], []) if mining != "none" else (pos, neg)
  if mining == "triplet_margin":
    return ([j for j in pos if d[a, j] + MARGIN > min(d[a, neg])],
            [k for k in neg if d[a, k] < max(d[a, pos]) + MARGIN])
  if mining == "batch_hard":
    return [max(pos, key=lambda j: d[a, j])], [min(neg, key=lambda k: d[a, k])]
  if mining == "semihard":
    return ([j for j in pos if any(d[a, j] < d[a, k] < d[a, j] + MARGIN for k in neg)],
            [k for k in neg if any(d[a, j] < d[a, k] < d[a, j] + MARGIN for j in pos)])
  if mining == "multi_similarity":
    return ([j for j in pos if d[a, j] + EPS > min(d[a, neg])], [k for k in neg if d[a, k] - EPS < max(d[a, pos])])
  return pos, neg


def _potential(groups, kind, normalize, p, a, c):
  if normalize == "batch":
    groups = [[x for g in groups for x in g]]
  total = 0.0
  for g in groups:
    g = np.asarray(g, dtype=float)
    if normalize == "none":
      total += {"constant": g.sum(), "power": (np.maximum(g, 0) ** (p + 1)).sum() / (p + 1),
                "exponential": (np.exp(a * g) - 1).sum() / a}[kind]
    elif kind == "constant":
      total += g.sum() / (c + len(g)) if c + len(g) > 0 else 0.0
    elif kind == "power":
      total += (c + (np.maximum(g, 0) ** (p + 1)).sum()) ** (1 / (p + 1)) - c ** (1 / (p + 1))
    elif len(g) or c > 0:
      total += np.log(c + np.exp(a * g).sum()) / a
  return total


def _reduce(total, reduction, count, num_queries):
  return {"sum": total, "mean": total / count if count else 0.0, "anchor_mean": total / num_queries}[reduction]


def _brute_triplet(d, labels, mining, kind, normalize, hinge, reduction, c):
  groups = []
  for a in range(len(labels)):
    if mining in ("threshold", "multi_similarity", "batch_hard"):
      pos, neg = _mine_pairs(d, labels, a, mining)
    else:
      pos, neg = _pairs(d, labels, a)
    xs = []
    for j in pos:
      for k in neg:
        x = d[a, j] - d[a, k] + MARGIN
        if mining == "triplet_margin" and not x > 0:
          continue
        if mining == "semihard" and not d[a, j] < d[a, k] < d[a, j] + MARGIN:
          continue
        if hinge and not x > 0:
          continue
        xs.append(x)
    groups.append(xs)
  total = _potential(groups, kind, normalize, P, ALPHA, c)
  return _reduce(total, reduction, sum(map(len, groups)), len(labels))


def _brute_pair(d, labels, mining, kind, normalize, hinge, reduction, c):
  pos_groups, neg_groups = [], []
  for a in range(len(labels)):
    pos, neg = _mine_pairs(d, labels, a, mining)
    xp = [d[a, j] - T1 for j in pos]
    xn = [T2 - d[a, k] for k in neg]
    if hinge:
      xp, xn = [x for x in xp if x > 0], [x for x in xn if x > 0]
    pos_groups.append(xp)
    neg_groups.append(xn)
  total = (_potential(pos_groups, kind, normalize, P, ALPHA, c) + _potential(neg_groups, kind, normalize, P, BETA, c))
  return _reduce(total, reduction, sum(map(len, pos_groups)) + sum(map(len, neg_groups)), len(labels))


_MININGS = ("none", "threshold", "triplet_margin", "batch_hard", "semihard", "multi_similarity")
_KINDS = ("constant", "power", "exponential")
_NORMS = ("none", "anchor", "batch")
_REDS = ("sum", "mean", "anchor_mean")
# Every mining x weighting; normalization, hinge, reduction and offset cycle through their values.
_COMBOS = [(m, k, _NORMS[i % 3], bool(i % 2), _REDS[(i // 2) % 3], float(i % 4 == 3))
           for i, (m, k) in enumerate(itertools.product(_MININGS, _KINDS))]


@pytest.mark.parametrize("mining", _MININGS)
def test_triplet_form_matches_brute_force_for_every_mining_and_weighting(mining):
  _, labels, d = _data()
  with jax.enable_x64(True):
    for (m, kind, normalize, hinge, reduction, c) in [t for t in _COMBOS if t[0] == mining]:
      expected = _brute_triplet(d, labels, m, kind, normalize, hinge, reduction, c)
      methods = ("sorted", "tiled") if kind != "power" else ("tiled",)
      for method in methods:
        got = gpw_triplet_loss(jnp.asarray(d), jnp.asarray(labels), margin=MARGIN, mining=m, pos_threshold=T1,
                               neg_threshold=T2, epsilon=EPS, weighting=kind, p=P, alpha=ALPHA, normalize=normalize,
                               normalize_offset=c, hinge=hinge, reduction=reduction, method=method)
        np.testing.assert_allclose(float(got), expected, rtol=1e-9, atol=1e-12,
                                   err_msg=f"{kind} {normalize} {hinge=} {reduction} {c=} {method}")


@pytest.mark.parametrize("mining", _MININGS)
def test_pair_form_matches_brute_force_for_every_mining_and_weighting(mining):
  _, labels, d = _data(1)
  with jax.enable_x64(True):
    for (m, kind, normalize, hinge, reduction, c) in [t for t in _COMBOS if t[0] == mining]:
      expected = _brute_pair(d, labels, m, kind, normalize, hinge, reduction, c)
      got = gpw_pair_loss(jnp.asarray(d), jnp.asarray(labels), pos_margin=T1, neg_margin=T2, mining=m, margin=MARGIN,
                          epsilon=EPS, weighting=kind, p=P, q=P, alpha=ALPHA, beta=BETA, normalize=normalize,
                          normalize_offset=c, hinge=hinge, reduction=reduction)
      np.testing.assert_allclose(float(got), expected, rtol=1e-9, atol=1e-12,
                                 err_msg=f"{kind} {normalize} {hinge=} {reduction} {c=}")


def test_hand_computed_pair_and_triplet_values():
  # Points 0, 1 (class 0) and 2 (class 1) on a line: D(0,1) = 1, D(0,2) = 2, D(1,2) = 1.
  emb = jnp.array([[0.0], [1.0], [2.0]])
  labels = jnp.array([0, 0, 1])
  # Pair form, m1 = 0.5, m2 = 1.5, constant weights, sum: positives (0,1),(1,0): 0.5 each; negatives: (0,2): 0,
  # (2,0): 0, (1,2),(2,1): 0.5 each.  Total 2.
  gpw_pair = losses.get("gpw_pair")
  assert float(gpw_pair(emb, labels, pos_margin=0.5, neg_margin=1.5, reduction="sum")) == pytest.approx(2.0)
  # Exponential, normalized per anchor, no offset, alpha = beta = 1: each anchor group is log(sum e^x):
  # anchor 0: pos {0.5} -> 0.5, neg {} -> 0; anchor 1: pos {0.5}, neg {0.5} -> 1.0; anchor 2: neg {0.5} -> 0.5.
  got = gpw_pair(emb, labels, pos_margin=0.5, neg_margin=1.5, weighting="exponential", alpha=1.0, beta=1.0,
                 normalize="anchor", reduction="sum")
  assert float(got) == pytest.approx(2.0)
  # Triplet form, margin 1.5: (0,1,2): 1-2+1.5 = 0.5; (1,0,2): 1-1+1.5 = 1.5.  Sum 2, mean 1.
  # Power p = 1: potential sum x^2/2 = 0.125 + 1.125 = 1.25.
  gpw_triplet = losses.get("gpw_triplet")
  assert float(gpw_triplet(emb, labels, margin=1.5, reduction="sum")) == pytest.approx(2.0)
  assert float(gpw_triplet(emb, labels, margin=1.5, reduction="mean")) == pytest.approx(1.0)
  assert float(gpw_triplet(emb, labels, margin=1.5, weighting="power", p=1.0, reduction="sum")) == pytest.approx(1.25)


@pytest.mark.parametrize("kind,normalize,offset", [("constant", "none", 0.0), ("power", "none", 0.0),
                                                   ("exponential", "none", 0.0), ("constant", "anchor", 1.0),
                                                   ("power", "anchor", 0.0), ("exponential", "anchor", 1.0),
                                                   ("exponential", "batch", 0.0)])
def test_pair_form_gradient_is_the_weighting_module_weights(kind, normalize, offset):
  """dL/dD = w+ on mined positives and -w- on mined negatives, w from `metric_jax.weighting` (sum reduction)."""
  _, labels, d = _data(2)
  d = jnp.asarray(d, jnp.float32)
  labels = jnp.asarray(labels)
  kw = dict(pos_margin=T1, neg_margin=T2, weighting=kind, p=P, q=P, alpha=ALPHA, beta=BETA, normalize=normalize,
            normalize_offset=offset, reduction="sum")
  grad = jax.grad(lambda m: gpw_pair_loss(m, labels, **kw))(d)
  same = labels[:, None] == labels[None, :]
  off_diag = ~jnp.eye(len(labels), dtype=bool)
  pos = same & off_diag & (d > T1)
  neg = ~same & (d < T2)
  w_pos = weighting.pair_weights(kind, d - T1, pos, exponent=P, scale=ALPHA, normalization=normalize, offset=offset)
  w_neg = weighting.pair_weights(kind, T2 - d, neg, exponent=P, scale=BETA, normalization=normalize, offset=offset)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(w_pos - w_neg), rtol=2e-5, atol=1e-6)


def test_triplet_form_gradient_is_the_sum_of_triplet_weights():
  """dL/dD_ap = sum_n w_apn, dL/dD_an = -sum_p w_apn, with w = exp(alpha x) / sum over the anchor's triplets."""
  _, labels, d = _data(3)
  with jax.enable_x64(True):
    grad = jax.grad(lambda m: gpw_triplet_loss(m, jnp.asarray(labels), margin=MARGIN, weighting="exponential",
                                               alpha=ALPHA, normalize="anchor", reduction="sum"))(jnp.asarray(d))
  expected = np.zeros_like(d)
  for a in range(len(labels)):
    pos, neg = _pairs(d, labels, a)
    trip = [(j, k, d[a, j] - d[a, k] + MARGIN) for j in pos for k in neg if d[a, j] - d[a, k] + MARGIN > 0]
    z = sum(np.exp(ALPHA * x) for _, _, x in trip)
    for j, k, x in trip:
      expected[a, j] += np.exp(ALPHA * x) / z
      expected[a, k] -= np.exp(ALPHA * x) / z
  np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-9, atol=1e-12)


def test_sorted_exponential_stays_finite_and_matches_tiled_for_large_scales():
  _, labels, d = _data(4)
  d = jnp.asarray(d * 5.0, jnp.float32)
  kw = dict(margin=MARGIN, weighting="exponential", alpha=40.0, normalize="anchor", normalize_offset=1.0)
  labels = jnp.asarray(labels)
  v1, g1 = jax.value_and_grad(lambda m: gpw_triplet_loss(m, labels, method="sorted", **kw))(d)
  v2, g2 = jax.value_and_grad(lambda m: gpw_triplet_loss(m, labels, method="tiled", **kw))(d)
  assert np.isfinite(float(v1)) and np.isfinite(np.asarray(g1)).all()
  np.testing.assert_allclose(float(v1), float(v2), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name,hparams", [
    ("gpw_pair", dict(weighting="power", normalize="anchor", mining="semihard")),
    ("gpw_pair", dict(weighting="exponential", normalize="batch", normalize_offset=1.0, hinge=False)),
    ("gpw_triplet", dict(weighting="exponential", mining="triplet_margin", normalize="anchor")),
    ("gpw_triplet", dict(weighting="power", p=1.5, mining="none", distance="squared_euclidean")),
])
def test_gradients_match_finite_differences(name, hparams):
  emb, labels, _ = _data(5)
  fn = losses.get(name)
  with jax.enable_x64(True):
    jtu.check_grads(jax.jit(lambda e: fn(e, jnp.asarray(labels), **hparams)), (jnp.asarray(emb),), order=1,
                    modes=("fwd", "rev"))


def test_square_distance_variant_is_the_matrix_form_on_squared_distances():
  emb, labels, d = _data(6)
  with jax.enable_x64(True):
    for name, matrix_fn in (("gpw_pair", gpw_pair_loss), ("gpw_triplet", gpw_triplet_loss)):
      got = losses.get(name)(jnp.asarray(emb), jnp.asarray(labels), distance="squared_euclidean",
                             weighting="exponential", alpha=1.0)
      expected = matrix_fn(jnp.asarray(d ** 2), jnp.asarray(labels), weighting="exponential", alpha=1.0)
      np.testing.assert_allclose(float(got), float(expected), rtol=1e-10)


def test_bad_hyperparameters_name_the_argument():
  emb = jnp.ones((4, 2))
  labels = jnp.array([0, 0, 1, 1])
  for name in ("gpw_pair", "gpw_triplet"):
    fn = losses.get(name)
    for kwargs, arg in ((dict(mining="random"), "mining"), (dict(weighting="linear"), "weighting"),
                        (dict(normalize="row"), "normalize"), (dict(reduction="avg"), "reduction"),
                        (dict(alpha=0.0), "alpha"), (dict(p=-1.0), "p"), (dict(distance="dot"), "distance"),
                        (dict(normalize_offset=-1.0), "normalize_offset")):
      with pytest.raises(ValueError, match=arg):
        fn(emb, labels, **kwargs)
  with pytest.raises(ValueError, match="pos_margin"):
    losses.get("gpw_pair")(emb, labels, pos_margin=2.0, neg_margin=1.0)
  with pytest.raises(ValueError, match="method"):
    losses.get("gpw_triplet")(emb, labels, weighting="power", method="sorted")


# Positive slots (method="auto", positive_slots=2): the default labels have at most 2 positives per anchor (slot path);
# MANY has an anchor with 4 (the `lax.cond` must take the sorted / tiled fallback). Values against the brute-force
# loop, gradients against the explicit sorted / tiled method.
MANY = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 3])


@pytest.mark.parametrize("mining", _MININGS)
def test_triplet_positive_slots_match_brute_force_and_the_general_method(mining):
  _, few, d = _data(7)
  with jax.enable_x64(True):
    for (m, kind, normalize, hinge, reduction, c) in [t for t in _COMBOS if t[0] == mining]:
      kw = dict(margin=MARGIN, mining=m, pos_threshold=T1, neg_threshold=T2, epsilon=EPS, weighting=kind, p=P,
                alpha=ALPHA, normalize=normalize, normalize_offset=c, hinge=hinge, reduction=reduction)
      slots = jax.jit(jax.value_and_grad(lambda x, y: gpw_triplet_loss(x, y, positive_slots=2, **kw)))
      method = "tiled" if kind == "power" else "sorted"
      general = jax.jit(jax.grad(lambda x, y: gpw_triplet_loss(x, y, method=method, **kw)))
      for labels in (few, MANY):
        expected = _brute_triplet(d, labels, m, kind, normalize, hinge, reduction, c)
        value, grad = slots(jnp.asarray(d), jnp.asarray(labels))
        msg = f"{kind} {normalize} {hinge=} {reduction} {c=} labels={labels}"
        np.testing.assert_allclose(float(value), expected, rtol=1e-9, atol=1e-12, err_msg=msg)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(general(jnp.asarray(d), jnp.asarray(labels))),
                                   rtol=1e-9, atol=1e-12, err_msg=msg)
