"""Mining masks against explicit numpy loops; triplet windows against the materialized triplet set; jit and vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metric_jax import labels as labels_lib, mining

LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])


def _setup(seed=0):
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(len(LABELS), 3))
  d = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
  masks = labels_lib.pair_masks(jnp.asarray(LABELS))
  return d, np.asarray(masks.positive), np.asarray(masks.negative), masks


def _loop_pairs(d, pos, neg, rule):
  out_p, out_n = np.zeros_like(pos), np.zeros_like(neg)
  for a in range(len(d)):
    ps, ns = np.nonzero(pos[a])[0], np.nonzero(neg[a])[0]
    for p in ps:
      out_p[a, p] = rule("pos", a, p, ps, ns)
    for n in ns:
      out_n[a, n] = rule("neg", a, n, ps, ns)
  return out_p, out_n


def _check(d, pos, neg, got, rule):
  exp_p, exp_n = _loop_pairs(d, pos, neg, rule)
  np.testing.assert_array_equal(np.asarray(got[0]), exp_p)
  np.testing.assert_array_equal(np.asarray(got[1]), exp_n)


def test_threshold_pairs():
  d, pos, neg, masks = _setup()
  got = mining.threshold_pairs(jnp.asarray(d), masks.positive, masks.negative, pos_threshold=1.0, neg_threshold=1.5)
  _check(d, pos, neg, got, lambda kind, a, j, ps, ns: d[a, j] > 1.0 if kind == "pos" else d[a, j] < 1.5)


def test_batch_hard_pairs_pick_farthest_positive_and_closest_negative():
  d, pos, neg, masks = _setup(1)

  def rule(kind, a, j, ps, ns):
    if not len(ps) or not len(ns):
      return False
    return j == (ps[np.argmax(d[a, ps])] if kind == "pos" else ns[np.argmin(d[a, ns])])

  _check(d, pos, neg, mining.batch_hard_pairs(jnp.asarray(d), masks.positive, masks.negative), rule)
  # Label 3 has a single sample: no positive, so that anchor selects nothing.
  got = mining.batch_hard_pairs(jnp.asarray(d), masks.positive, masks.negative)
  assert not np.asarray(got[0])[-1].any() and not np.asarray(got[1])[-1].any()


def test_multi_similarity_pairs_for_similarities_and_distances():
  d, pos, neg, masks = _setup(2)
  s = 1.0 - d / d.max()
  eps = 0.05

  def rule(kind, a, j, ps, ns):
    if not len(ps) or not len(ns):
      return False
    if kind == "pos":
      return s[a, j] - eps < s[a, ns].max()
    return s[a, j] + eps > s[a, ps].min()

  _check(d, pos, neg, mining.multi_similarity_pairs(jnp.asarray(s), masks.positive, masks.negative, epsilon=eps), rule)
  # The distance form on D = -S is the same selection.
  _check(d, pos, neg, mining.multi_similarity_pairs(jnp.asarray(-s), masks.positive, masks.negative, epsilon=eps,
                                                    similarity=False), rule)


def test_triplet_margin_and_semihard_pairs():
  d, pos, neg, masks = _setup(3)
  m = 0.5

  def margin_rule(kind, a, j, ps, ns):
    if kind == "pos":
      return any(d[a, j] - d[a, n] + m > 0 for n in ns)
    return any(d[a, p] - d[a, j] + m > 0 for p in ps)

  def semihard_rule(kind, a, j, ps, ns):
    if kind == "pos":
      return any(d[a, j] < d[a, n] < d[a, j] + m for n in ns)
    return any(d[a, p] < d[a, j] < d[a, p] + m for p in ps)

  _check(d, pos, neg, mining.triplet_margin_pairs(jnp.asarray(d), masks.positive, masks.negative, margin=m),
         margin_rule)
  _check(d, pos, neg, mining.semihard_pairs(jnp.asarray(d), masks.positive, masks.negative, margin=m), semihard_rule)


@pytest.mark.parametrize("name", ["all", "triplet_margin", "semihard", "batch_hard"])
def test_triplet_windows_select_the_documented_triplets(name):
  d, pos, neg, masks = _setup(4)
  m = 0.4
  fn = {"all": mining.all_triplets, "triplet_margin": mining.triplet_margin_triplets,
        "semihard": mining.semihard_triplets, "batch_hard": mining.batch_hard_triplets}[name]
  kwargs = {"margin": m} if name in ("triplet_margin", "semihard") else {}
  window = fn(jnp.asarray(d), masks.positive, masks.negative, **kwargs)
  got = np.asarray(mining.triplet_mask(jnp.asarray(d), window))
  expected = np.zeros_like(got)
  for a in range(len(d)):
    ps, ns = np.nonzero(pos[a])[0], np.nonzero(neg[a])[0]
    for p in ps:
      for n in ns:
        if name == "all":
          expected[a, p, n] = True
        elif name == "triplet_margin":
          expected[a, p, n] = d[a, n] < d[a, p] + m
        elif name == "semihard":
          expected[a, p, n] = d[a, p] < d[a, n] < d[a, p] + m
        else:
          expected[a, p, n] = p == ps[np.argmax(d[a, ps])] and n == ns[np.argmin(d[a, ns])]
  np.testing.assert_array_equal(got, expected)


def test_window_sums_equal_sums_over_the_materialized_window():
  d, pos, neg, masks = _setup(5)
  rng = np.random.default_rng(0)
  q = rng.normal(size=d.shape)
  lower = d - 0.3
  upper = d + 0.6
  with jax.enable_x64(True):
    count, total = mining.window_sums(jnp.asarray(d), masks.negative, jnp.asarray(lower), jnp.asarray(upper),
                                      [jnp.ones(d.shape), jnp.asarray(q)])
  inside = neg[:, None, :] & (d[:, None, :] > lower[:, :, None]) & (d[:, None, :] < upper[:, :, None])
  np.testing.assert_allclose(np.asarray(count), inside.sum(-1))
  np.testing.assert_allclose(np.asarray(total), (inside * q[:, None, :]).sum(-1), rtol=1e-10, atol=1e-12)


def test_miners_jit_and_vmap_over_batches():
  rng = np.random.default_rng(6)
  d = jnp.asarray(rng.uniform(size=(3, 6, 6)), jnp.float32)
  pos = jnp.asarray(rng.uniform(size=(3, 6, 6)) > 0.6)
  neg = ~pos
  fn = jax.jit(jax.vmap(lambda a, b, c: mining.mine_pairs("semihard", a, b, c, margin=0.3)))
  got = fn(d, pos, neg)
  for i in range(3):
    ref = mining.semihard_pairs(d[i], pos[i], neg[i], margin=0.3)
    np.testing.assert_array_equal(np.asarray(got[0][i]), np.asarray(ref[0]))
    np.testing.assert_array_equal(np.asarray(got[1][i]), np.asarray(ref[1]))


def test_bad_inputs_name_the_argument():
  d = jnp.ones((3, 3))
  mask = jnp.ones((3, 3), bool)
  with pytest.raises(ValueError, match="mining"):
    mining.mine_pairs("random", d, mask, mask)
  with pytest.raises(ValueError, match="negative"):
    mining.threshold_pairs(d, mask, jnp.ones((3, 2), bool))
  with pytest.raises(TypeError, match="positive"):
    mining.batch_hard_pairs(d, jnp.ones((3, 3)), mask)
  with pytest.raises(ValueError, match="distance"):
    mining.semihard_pairs(jnp.ones((3,)), mask, mask)


def test_positive_slots_hold_each_rows_first_positives_in_key_order():
  _, pos, _, _ = _setup()
  for num_slots in (1, 2, 3, 20):
    index, valid = mining.positive_slots(jnp.asarray(pos), num_slots)
    width = min(num_slots, pos.shape[1])
    assert index.shape == valid.shape == (len(LABELS), width)
    for a in range(len(LABELS)):
      expected = list(np.nonzero(pos[a])[0][:width])
      assert list(np.asarray(index[a])[np.asarray(valid[a])]) == expected
      assert list(np.asarray(valid[a])) == [True] * len(expected) + [False] * (width - len(expected))
  assert int(mining.max_positives(mining.all_triplets(jnp.asarray(_setup()[0]), jnp.asarray(pos),
                                                      jnp.asarray(~pos)))) == 2


def test_label_candidates_give_the_top_k_positive_slots_and_fall_back_when_a_class_is_too_large():
  """`label_candidates` (one sort of the key labels) hold every positive of each query in key order: the slots read
  from them equal `lax.top_k`'s and the positive counts `max_positives`' over the rows, for shuffled labels, padded
  keys and queries, a subset of the positives (a mined window) and rectangular keys; a class with more keys than
  candidates makes them incomplete, and the slots then come from `top_k` (still exact)."""
  rng = np.random.default_rng(7)
  labels = rng.permutation(np.repeat(np.arange(6), 4))                  # 24 keys, 4 per class, shuffled
  key_valid = rng.random(24) > 0.2
  query_valid = rng.random(24) > 0.2
  masks = labels_lib.pair_masks(jnp.asarray(labels), query_valid=jnp.asarray(query_valid),
                                key_valid=jnp.asarray(key_valid))
  subset = masks.positive & jnp.asarray(rng.random((24, 24)) > 0.4)      # like a mined window's positives
  for positive in (masks.positive, subset):
    for num_candidates, complete in ((4, True), (5, True), (3, False)):
      candidates = mining.label_candidates(jnp.asarray(labels), jnp.asarray(labels), jnp.asarray(query_valid),
                                           num_candidates)
      assert bool(candidates.complete) == complete
      window = mining.TripletWindow(positive, masks.negative, jnp.zeros((24, 24)), jnp.ones((24, 24)))
      assert int(jax.jit(mining.max_positives)(window, candidates)) == int(mining.max_positives(window))
      for num_slots in (1, 3):
        expected = mining.positive_slots(positive, num_slots)
        got = jax.jit(mining.positive_slots, static_argnums=1)(positive, num_slots, candidates)
        for e, g in zip(expected, got):
          np.testing.assert_array_equal(np.asarray(g), np.asarray(e))
  # Queries that are not keys (rectangular): a query class absent from the keys has no candidate.
  queries = np.array([0, 5, 9])
  candidates = mining.label_candidates(jnp.asarray(queries), jnp.asarray(labels), jnp.ones(3, bool), 4)
  for q, row, run in zip(queries, np.asarray(candidates.index), np.asarray(candidates.in_run)):
    assert list(row[run]) == list(np.nonzero(labels == q)[0])
  with pytest.raises(ValueError, match="candidates"):
    mining.positive_slots(masks.positive, 3, mining.label_candidates(jnp.asarray(labels), jnp.asarray(labels),
                                                                    jnp.asarray(query_valid), 2))


@pytest.mark.parametrize("name", ["none", "semihard", "triplet_margin"])
def test_slot_triplets_are_the_materialized_triplets_of_each_slot(name):
  d, pos, neg, _ = _setup(3)
  window = mining.mine_triplets(name, jnp.asarray(d), jnp.asarray(pos), jnp.asarray(neg), margin=0.5)
  slots = mining.slot_triplets(jnp.asarray(d), window, 2)
  full = np.asarray(mining.triplet_mask(jnp.asarray(d), window))                   # [B, M, M]
  for a in range(len(LABELS)):
    for s in range(2):
      if slots.valid[a, s]:
        np.testing.assert_array_equal(np.asarray(slots.inside[a, s]), full[a, int(slots.index[a, s])])
      else:
        assert not np.asarray(slots.inside[a, s]).any()
  # Every selected triplet lands in exactly one slot (at most 2 positives per anchor here).
  assert int(jnp.sum(slots.inside)) == int(full.sum())


def test_num_slots_must_be_a_non_negative_int():
  assert mining.check_num_slots(None) == 0 and mining.check_num_slots(4) == 4
  for bad in (-1, 2.0, True, "8"):
    with pytest.raises(ValueError, match="positive_slots"):
      mining.check_num_slots(bad)
