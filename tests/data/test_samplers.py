"""Samplers: batch structure, determinism in (seed, step), process shards, resumption, epochs."""

import collections

import numpy as np
import pytest

from metric_jax.data import (ClassAccumulatingSampler, NPairSampler, PairSampler, PKSampler, RandomSampler,
                             greedy_negative_class_miner)

RNG = np.random.default_rng(123)
# 23 classes of uneven sizes 3..14: some classes smaller than K = 4 / 5.
SIZES = RNG.integers(3, 15, size=23)
LABELS = RNG.permutation(np.repeat(np.arange(23) * 7 + 2, SIZES))  # non-contiguous label values


def _factories():
  return {
      "pk": lambda **kw: PKSampler(LABELS, 6, 4, **kw),
      "npair": lambda **kw: NPairSampler(LABELS, 8, **kw),
      "pair": lambda **kw: PairSampler(LABELS, 12, **kw),
      "random": lambda **kw: RandomSampler(LABELS.size, 24, **kw),
      "accumulate": lambda **kw: ClassAccumulatingSampler(LABELS, 40, max_per_class=10, **kw),
  }


@pytest.mark.parametrize("undersized", ["replace", "drop"])
def test_pk_every_batch_has_p_distinct_classes_times_k(undersized):
  p, k = 6, 5
  s = PKSampler(LABELS, p, k, seed=3, undersized=undersized)
  assert s.global_batch_size == s.batch_size == p * k
  for step in range(3 * s.steps_per_epoch + 2):
    idx = s.indices(step)
    assert idx.dtype == np.int64 and idx.shape == (p * k,)
    counts = collections.Counter(LABELS[idx].tolist())
    assert len(counts) == p and set(counts.values()) == {k}
    if undersized == "drop":
      assert all((LABELS == c).sum() >= k for c in counts)
      assert len(set(idx.tolist())) == p * k  # without replacement when every class is large enough


def test_pk_undersized_classes_explicit():
  k = 5
  small = {c for c in np.unique(LABELS) if (LABELS == c).sum() < k}
  assert small  # the fixture has classes smaller than K
  with pytest.raises(ValueError, match="samples_per_class"):
    PKSampler(LABELS, 4, k, seed=0, undersized="error")
  with pytest.raises(ValueError, match="undersized"):
    PKSampler(LABELS, 4, k, seed=0, undersized="pad")
  replace = PKSampler(LABELS, 4, k, seed=0, undersized="replace")
  seen = set()
  for step in range(replace.steps_per_epoch):
    seen |= set(LABELS[replace.indices(step)].tolist())
  assert seen & small  # small classes are still sampled, with repeats


def test_pk_each_class_once_per_epoch():
  s = PKSampler(LABELS, 5, 2, seed=11)
  assert s.steps_per_epoch == 23 // 5
  for epoch in range(3):
    classes = [c for step in range(epoch * s.steps_per_epoch, (epoch + 1) * s.steps_per_epoch)
               for c in set(LABELS[s.indices(step)].tolist())]
    assert len(classes) == len(set(classes)) == 5 * s.steps_per_epoch
    assert all(s.epoch(step) == epoch for step in range(epoch * s.steps_per_epoch, (epoch + 1) * s.steps_per_epoch))


@pytest.mark.parametrize("kind", list(_factories()))
def test_same_seed_and_step_same_batch_any_order(kind):
  make = _factories()[kind]
  a, b = make(seed=5), make(seed=5)
  steps = [0, 1, 7, 30, 2]
  forward = [a.indices(s) for s in steps]
  backward = [b.indices(s) for s in reversed(steps)][::-1]
  for x, y in zip(forward, backward):
    np.testing.assert_array_equal(x, y)
  other = make(seed=6)
  assert any(not np.array_equal(a.indices(s), other.indices(s)) for s in steps)
  assert any(not np.array_equal(a.indices(0), a.indices(s)) for s in steps[1:])


@pytest.mark.parametrize("kind", list(_factories()))
def test_process_shards_disjoint_and_cover_single_process_batch(kind):
  make = _factories()[kind]
  single = make(seed=9)
  shards = [make(seed=9, process_index=i, process_count=2) for i in range(2)]
  for step in [0, 3, 17]:
    full = single.indices(step)
    parts = [s.indices(step) for s in shards]
    assert all(p.shape == (single.global_batch_size // 2,) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), full)
    # Disjoint slots: as positions of the global batch; as example ids wherever the sampler draws without repeats.
    if kind in ("random", "accumulate"):
      real = [p[p >= 0] for p in parts]
      assert not set(real[0].tolist()) & set(real[1].tolist())


def test_bad_process_arguments_name_the_argument():
  with pytest.raises(ValueError, match="process_count"):
    PKSampler(LABELS, 5, 3, seed=0, process_count=2)  # 15 does not split in 2
  with pytest.raises(ValueError, match="process_index"):
    PKSampler(LABELS, 6, 4, seed=0, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="classes_per_batch"):
    PKSampler(LABELS, 40, 2, seed=0)
  with pytest.raises(TypeError, match="labels"):
    PKSampler(LABELS.astype(float), 4, 2, seed=0)
  with pytest.raises(ValueError, match="step"):
    PKSampler(LABELS, 4, 2, seed=0).indices(-1)


def test_resume_from_saved_state_continues_the_stream():
  s = PKSampler(LABELS, 6, 4, seed=1)
  stream = [s.indices(step) for step in range(12)]
  saved_step = 7  # the whole sampler state is the step
  resumed = PKSampler(LABELS, 6, 4, seed=1)
  for step in range(saved_step, 12):
    np.testing.assert_array_equal(resumed.indices(step), stream[step])


def test_pair_sampler_two_independent_permutations():
  b = 12
  s = PairSampler(LABELS, b, seed=2)
  assert s.global_batch_size == 2 * b and s.steps_per_epoch == LABELS.size // b
  firsts = np.concatenate([s.indices(t)[:b] for t in range(s.steps_per_epoch)])
  seconds = np.concatenate([s.indices(t)[b:] for t in range(s.steps_per_epoch)])
  # Within an epoch each stream visits distinct examples; the two streams are different orders.
  assert len(set(firsts.tolist())) == firsts.size and len(set(seconds.tolist())) == seconds.size
  assert not np.array_equal(firsts, seconds)


def test_random_sampler_epoch_is_a_permutation():
  s = RandomSampler(50, 10, seed=4)
  epoch0 = np.concatenate([s.indices(t) for t in range(5)])
  np.testing.assert_array_equal(np.sort(epoch0), np.arange(50))
  assert s.epoch(4) == 0 and s.epoch(5) == 1


def test_npair_sampler_n_classes_times_two():
  s = NPairSampler(LABELS, 8, seed=0)
  for step in range(5):
    idx = s.indices(step)
    counts = collections.Counter(LABELS[idx].tolist())
    assert len(counts) == 8 and set(counts.values()) == {2}
    assert np.all(LABELS[idx[0::2]] == LABELS[idx[1::2]])


def test_npair_negative_class_mining_picks_the_most_violating_classes():
  # Embeddings by class: class c's embedding is (c + 1, 1). The greedy miner, seeded from one random class, must add the
  # class with the largest inner product with the selected anchors at each step: (c_s + 1)(c + 1) + 1 grows with c.
  labels = np.repeat(np.arange(20), 3)
  embed_calls = []

  def embed_fn(indices):
    embed_calls.append(np.asarray(indices))
    c = labels[indices].astype(float) + 1.0
    return np.stack([c, np.ones_like(c)], axis=1)

  s = NPairSampler(labels, 4, seed=0, mining_fn=greedy_negative_class_miner(embed_fn), num_candidate_classes=20)
  idx = s.indices(0)
  chosen = [int(c) for c in dict.fromkeys(labels[idx].tolist())]
  assert len(chosen) == 4 and np.all(labels[idx[0::2]] == labels[idx[1::2]])
  assert embed_calls and embed_calls[0].size == 20
  first, rest = chosen[0], chosen[1:]
  # Independent re-derivation of the greedy order: scores = max over selected s of (c_s * c + 1).
  selected = [first]
  while len(selected) < 4:
    scores = {c: max((cs + 1) * (c + 1) + 1 for cs in selected) for c in range(20) if c not in selected}
    selected.append(max(scores, key=scores.get))
  assert set(rest) == set(selected[1:])
  np.testing.assert_array_equal(s.indices(0), idx)  # deterministic given the same embeddings


def test_class_accumulating_sampler_whole_classes_and_padding():
  s = ClassAccumulatingSampler(LABELS, 40, max_per_class=10, seed=0)
  for step in range(12):
    idx = s.indices(step)
    assert idx.shape == (40,)
    real = idx[idx >= 0]
    assert np.all(idx[real.size:] == -1)  # padding only at the end
    counts = collections.Counter(LABELS[real].tolist())
    for c, n in counts.items():
      assert n == min(10, (LABELS == c).sum())  # whole class (capped), never split over batches
  # Every class appears exactly once per epoch.
  steps = [t for t in range(40) if s.epoch(t) == 1]
  assert steps == list(range(steps[0], steps[-1] + 1))
  classes = [c for t in steps for c in set(LABELS[s.indices(t)[s.indices(t) >= 0]].tolist())]
  assert sorted(classes) == sorted(set(LABELS.tolist()))
