"""The GPW identity of S1 (must-hold 6): for contrastive, triplet, lifted structure, multi-similarity and N-pair, the
gradient of the loss with respect to the pairwise matrix (`jax.grad` on the matrix form) equals the weights the GPW
paper assigns to each pair, written out here in numpy; and `gpw_pair` / `gpw_triplet` with the matching options
reproduce those losses' gradients (and, where the forms coincide, their values).

Similarity losses (multi-similarity, N-pair) enter GPW through `D = -S` (so `dL/dD = -dL/dS`) with margins
`m = -lambda`. Lifted structure: Song et al.'s form couples each positive pair with the negatives of *both* its ends, so
its weights are checked against the paper's formula but GPW reproduces the per-anchor generalized lifted structure
(Hermans et al.), whose weights are the per-anchor softmax; the test batch has every anchor active (inside the hinge).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metric_jax.losses.contrastive import contrastive_loss
from metric_jax.losses.gpw import gpw_pair_loss, gpw_triplet_loss
from metric_jax.losses.lifted import generalized_lifted_structure_loss, lifted_structure_loss
from metric_jax.losses.multi_similarity import multi_similarity_loss
from metric_jax.losses.npair import npair_mc_loss
from metric_jax.losses.triplet import triplet_loss

LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])


def _distances(seed=0, scale=0.5):
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(len(LABELS), 4)) * scale
  return np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1)), emb


def _masks():
  same = LABELS[:, None] == LABELS[None]
  return same & ~np.eye(len(LABELS), dtype=bool), ~same


def _grad(fn, matrix):
  with jax.enable_x64(True):
    return np.asarray(jax.grad(fn)(jnp.asarray(matrix)))


def test_contrastive_gradient_is_constant_weights_and_gpw_pair_reproduces_it():
  d, _ = _distances()
  pos, neg = _masks()
  m1, m2 = 0.4, 1.2
  # Contrastive (sum): w+ = 1 on positives with D > m1, w- = 1 on negatives with D < m2.
  expected = np.where(pos & (d > m1), 1.0, 0.0) - np.where(neg & (d < m2), 1.0, 0.0)
  loss = lambda m: contrastive_loss(m, jnp.asarray(LABELS), pos_margin=m1, neg_margin=m2, reduction="sum")
  gpw = lambda m: gpw_pair_loss(m, jnp.asarray(LABELS), pos_margin=m1, neg_margin=m2, reduction="sum")
  np.testing.assert_allclose(_grad(loss, d), expected, atol=1e-12)
  np.testing.assert_allclose(_grad(gpw, d), expected, atol=1e-12)
  # Hadsell's squared form: w+ = (D - m1), w- = (m2 - D), i.e. GPW power weights with p = q = 1.
  expected = np.where(pos, np.maximum(d - m1, 0), 0.0) - np.where(neg, np.maximum(m2 - d, 0), 0.0)
  loss = lambda m: contrastive_loss(m, jnp.asarray(LABELS), pos_margin=m1, neg_margin=m2, hinge_power=2,
                                    reduction="sum")
  gpw = lambda m: gpw_pair_loss(m, jnp.asarray(LABELS), pos_margin=m1, neg_margin=m2, weighting="power", p=1.0,
                                q=1.0, reduction="sum")
  np.testing.assert_allclose(_grad(loss, d), expected, atol=1e-12)
  np.testing.assert_allclose(_grad(gpw, d), expected, atol=1e-12)
  with jax.enable_x64(True):
    np.testing.assert_allclose(float(loss(jnp.asarray(d))), float(gpw(jnp.asarray(d))), rtol=1e-12)


def test_triplet_gradient_is_the_violating_triplet_count_and_gpw_triplet_reproduces_it():
  d, _ = _distances(1)
  pos, neg = _masks()
  margin = 0.3
  for mining, gpw_mining in (("all", "none"), ("hard", "batch_hard"), ("semihard", "semihard")):
    expected = np.zeros_like(d)
    for a in range(len(LABELS)):
      ps, ns = np.nonzero(pos[a])[0], np.nonzero(neg[a])[0]
      if mining == "hard":
        ps, ns = [ps[np.argmax(d[a, ps])]], [ns[np.argmin(d[a, ns])]]
      for p in ps:
        for n in ns:
          x = d[a, p] - d[a, n] + margin
          if x > 0 and (mining != "semihard" or d[a, p] < d[a, n]):
            expected[a, p] += 1.0   # w_apn = 1 (constant weights)
            expected[a, n] -= 1.0
    loss = lambda m: triplet_loss(m, jnp.asarray(LABELS), margin=margin, mining=mining, reduction="sum")
    gpw = lambda m: gpw_triplet_loss(m, jnp.asarray(LABELS), margin=margin, mining=gpw_mining, reduction="sum")
    assert np.abs(expected).sum() > 0
    np.testing.assert_allclose(_grad(loss, d), expected, atol=1e-12, err_msg=mining)
    np.testing.assert_allclose(_grad(gpw, d), expected, atol=1e-12, err_msg=mining)


def test_lifted_structure_gradient_is_the_papers_weights():
  d, _ = _distances(2)
  pos, neg = _masks()
  margin = 1.0
  num_pos = pos.sum()
  expected = np.zeros_like(d)
  for i, j in zip(*np.nonzero(pos)):
    ki = np.nonzero(neg[i])[0]        # negatives of i (row i)
    lj = np.nonzero(neg[:, j])[0]     # negatives of j (column j)
    z = np.exp(margin - d[i, ki]).sum() + np.exp(margin - d[lj, j]).sum()
    hinge = max(np.log(z) + d[i, j], 0.0)
    # dL/dD_ij = J_ij / |P|;  dL/dD_ik = -J_ij e^{m - D_ik} / (Z_ij |P|), likewise for the column negatives.
    expected[i, j] += hinge / num_pos
    expected[i, ki] -= hinge * np.exp(margin - d[i, ki]) / z / num_pos
    expected[lj, j] -= hinge * np.exp(margin - d[lj, j]) / z / num_pos
  loss = lambda m: lifted_structure_loss(m, jnp.asarray(LABELS), margin=margin)
  np.testing.assert_allclose(_grad(loss, d), expected, rtol=1e-9, atol=1e-12)


def test_generalized_lifted_structure_gradient_is_per_anchor_softmax_and_gpw_pair_reproduces_it():
  d, _ = _distances(3)
  pos, neg = _masks()
  m_pos, m_neg = 0.0, 2.0
  n = len(LABELS)
  expected = np.zeros_like(d)
  for a in range(n):
    wp = np.where(pos[a], np.exp(d[a] - m_pos), 0.0)
    wn = np.where(neg[a], np.exp(m_neg - d[a]), 0.0)
    assert np.log(wp.sum()) + np.log(wn.sum()) > 0   # every anchor inside the hinge
    expected[a] = (wp / wp.sum() - wn / wn.sum()) / n
  loss = lambda m: generalized_lifted_structure_loss(m, jnp.asarray(LABELS), pos_margin=m_pos, neg_margin=m_neg)
  gpw = lambda m: gpw_pair_loss(m, jnp.asarray(LABELS), pos_margin=m_pos, neg_margin=m_neg, weighting="exponential",
                                alpha=1.0, beta=1.0, normalize="anchor", hinge=False, reduction="anchor_mean")
  np.testing.assert_allclose(_grad(loss, d), expected, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(_grad(gpw, d), expected, rtol=1e-9, atol=1e-12)
  with jax.enable_x64(True):
    np.testing.assert_allclose(float(gpw(jnp.asarray(d))), float(loss(jnp.asarray(d))), rtol=1e-12)


def test_multi_similarity_gradient_is_its_weights_and_gpw_pair_reproduces_it():
  _, emb = _distances(4)
  emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  s = emb @ emb.T
  pos, neg = _masks()
  alpha, beta, lam, eps = 2.0, 10.0, 0.5, 0.1
  n = len(LABELS)
  for plus_one in (True, False):
    expected = np.zeros_like(s)
    for a in range(n):
      p_mined = pos[a] & (s[a] - eps < s[a][neg[a]].max())
      n_mined = neg[a] & (s[a] + eps > s[a][pos[a]].min())
      assert p_mined.any() and n_mined.any()
      wp = np.where(p_mined, np.exp(-alpha * (s[a] - lam)), 0.0)
      wn = np.where(n_mined, np.exp(beta * (s[a] - lam)), 0.0)
      # dL/dS_ip = -w+_ip / B,  dL/dS_in = w-_in / B  (Wang et al. 2019, Eq. 12-13).
      expected[a] = (-wp / (float(plus_one) + wp.sum()) + wn / (float(plus_one) + wn.sum())) / n
    loss = lambda m: multi_similarity_loss(m, jnp.asarray(LABELS), alpha=alpha, beta=beta, base=lam, epsilon=eps,
                                           plus_one=plus_one)
    gpw = lambda m: gpw_pair_loss(-m, jnp.asarray(LABELS), pos_margin=-lam, neg_margin=-lam,
                                  mining="multi_similarity", epsilon=eps, weighting="exponential", alpha=alpha,
                                  beta=beta, normalize="anchor", normalize_offset=float(plus_one), hinge=False,
                                  reduction="anchor_mean")
    np.testing.assert_allclose(_grad(loss, s), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(_grad(gpw, s), expected, rtol=1e-9, atol=1e-12)
    with jax.enable_x64(True):
      np.testing.assert_allclose(float(gpw(jnp.asarray(s))), float(loss(jnp.asarray(s))), rtol=1e-12)


def test_npair_gradient_is_softmax_weights_and_gpw_triplet_reproduces_it():
  """N-pair-mc on the anchors x positives table `S = A P^T` (one pair per class), as a rectangular matrix."""
  rng = np.random.default_rng(5)
  num = 6
  anchors, positives = rng.normal(size=(num, 4)), rng.normal(size=(num, 4))
  s = anchors @ positives.T
  labels = np.arange(num)
  expected = np.zeros_like(s)
  for a in range(num):
    w = np.exp(s[a] - s[a, a])
    w[a] = 0.0
    w = w / (1.0 + w.sum())      # w_an = e^{S_an - S_aa} / (1 + sum_n' e^{S_an' - S_aa})
    expected[a] = w / num
    expected[a, a] = -w.sum() / num
  loss = lambda m: npair_mc_loss(m, jnp.asarray(labels), jnp.asarray(labels), self_offset=None)
  gpw = lambda m: gpw_triplet_loss(-m, jnp.asarray(labels), jnp.asarray(labels), self_offset=None, margin=0.0,
                                   weighting="exponential", alpha=1.0, normalize="anchor", normalize_offset=1.0,
                                   hinge=False, reduction="anchor_mean")
  np.testing.assert_allclose(_grad(loss, s), expected, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(_grad(gpw, s), expected, rtol=1e-9, atol=1e-12)
  with jax.enable_x64(True):
    np.testing.assert_allclose(float(gpw(jnp.asarray(s))), float(loss(jnp.asarray(s))), rtol=1e-12)
