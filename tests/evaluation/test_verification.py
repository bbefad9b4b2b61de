"""Verification accuracy with n negatives: the draws' invariants, a numpy recount on the same draws, limiting cases."""

import numpy as np
import pytest

from metric_jax.evaluation import verification_accuracy
from metric_jax.evaluation.verification import sample_tuples
from tests.evaluation import _reference as ref


def test_draws_are_valid_positives_and_distinct_negatives():
  labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])  # class 2 is a singleton: never an anchor
  anchor, positive, negatives = sample_tuples(labels, 4, seed=3)
  assert sorted(anchor.tolist()) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
  assert (positive != anchor).all() and (labels[positive] == labels[anchor]).all()
  assert (labels[negatives] != labels[anchor][:, None]).all()
  assert all(len(set(row)) == 4 for row in negatives.tolist())
  again = sample_tuples(labels, 4, seed=3)
  np.testing.assert_array_equal(negatives, again[2])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_accuracy_recounted_on_the_same_draws(metric):
  x, labels = ref.clustered(np.random.default_rng(0), 10, 8, 6, 1.3)
  out = verification_accuracy(x, labels, num_negatives=(1, 7), metric=metric, seed=4, chunk_size=13)
  for n in (1, 7):
    anchor, positive, negatives = sample_tuples(labels, n, seed=4)
    scores = ref.score_matrix(x, x, metric)
    wins = [scores[a, p] > scores[a, neg].max() for a, p, neg in zip(anchor, positive, negatives)]
    assert out[f"verification@{n}"] == pytest.approx(np.mean(wins), abs=1e-12)


def test_limiting_cases():
  labels = np.repeat(np.arange(20), 4)
  separated = np.eye(20, dtype=np.float32)[labels]
  assert verification_accuracy(separated, labels, num_negatives=(1, 71))["verification@71"] == 1.0
  identical = np.ones((80, 3), np.float32)  # every score ties: a tie is a failure
  assert verification_accuracy(identical, labels, num_negatives=1)["verification@1"] == 0.0
  noise = np.random.default_rng(1).standard_normal((2000, 8)).astype(np.float32)
  chance = verification_accuracy(noise, np.repeat(np.arange(400), 5), num_negatives=1)["verification@1"]
  assert abs(chance - 0.5) < 0.05  # 2000 anchors: std of the mean about 0.011


def test_errors_name_the_argument():
  x = np.random.default_rng(2).standard_normal((6, 3)).astype(np.float32)
  with pytest.raises(ValueError, match="num_negatives"):
    verification_accuracy(x, np.array([0, 0, 0, 1, 1, 1]), num_negatives=(4,))
  with pytest.raises(ValueError, match="labels"):
    verification_accuracy(x, np.zeros(6, np.int64))
  with pytest.raises(ValueError, match="labels"):
    verification_accuracy(x, np.arange(6))
  with pytest.raises(ValueError, match="embeddings"):
    verification_accuracy(x * np.nan, np.array([0, 0, 0, 1, 1, 1]))
