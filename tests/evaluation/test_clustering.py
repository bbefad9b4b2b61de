"""Clustering metrics: NMI / AMI against pytorch-metric-learning on the same assignment, pairwise F1 against
scikit-learn's pair confusion matrix, and the seed average against scikit-learn k-means run directly."""

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from sklearn.cluster import KMeans
from sklearn.metrics import pair_confusion_matrix

from metric_jax.evaluation import clustering_metrics, pairwise_f1, scores_from_assignment
from tests.evaluation import _reference as ref


def f1_from_pair_confusion(labels, clusters):
  (_, false_positive), (false_negative, true_positive) = pair_confusion_matrix(labels, clusters) // 2
  precision = true_positive / (true_positive + false_positive)
  recall = true_positive / (true_positive + false_negative)
  return 2 * precision * recall / (precision + recall)


@pytest.fixture(scope="module")
def data():
  return ref.clustered(np.random.default_rng(0), 8, 15, 6, 1.2)


def test_nmi_ami_match_pml_on_the_same_assignment(data):
  x, labels = data
  clusters = np.random.default_rng(1).integers(0, 8, labels.size)
  seen = []

  def kmeans_func(embeddings, num_clusters):
    seen.append(num_clusters)
    return torch.from_numpy(clusters)

  calculator = AccuracyCalculator(include=("NMI", "AMI"), kmeans_func=kmeans_func, device=torch.device("cpu"))
  want = calculator.get_accuracy(x, labels)
  ours = scores_from_assignment(labels, clusters)
  assert seen == [8]  # PML clusters with k = number of classes, as we do
  assert ours["nmi"] == pytest.approx(want["NMI"], abs=1e-12)
  assert ours["ami"] == pytest.approx(want["AMI"], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairwise_f1_matches_pair_confusion_matrix(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 5, 60)
  clusters = rng.integers(0, 7, 60) * 3 + 10  # arbitrary cluster ids
  assert pairwise_f1(labels, clusters) == pytest.approx(f1_from_pair_confusion(labels, clusters), rel=1e-12)


def test_pairwise_f1_by_hand():
  # classes {0,1,2}{3,4}; clusters {0,1}{2,3,4}: same-cluster pairs 1 + 3 = 4, same-class pairs 3 + 1 = 4,
  # pairs in both: (0,1) and (3,4) -> precision = recall = 1/2, F1 = 1/2.
  assert pairwise_f1([0, 0, 0, 1, 1], [5, 5, 6, 6, 6]) == pytest.approx(0.5)
  assert pairwise_f1([0, 0, 1, 1], [9, 9, 4, 4]) == pytest.approx(1.0)
  assert pairwise_f1([0, 0, 1, 1], [0, 1, 2, 3]) == 0.0


def test_seed_average_equals_sklearn_kmeans_runs(data):
  x, labels = data
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  runs = [KMeans(n_clusters=8, n_init=1, random_state=s).fit_predict(unit) for s in (5, 6)]
  want_nmi = np.mean([scores_from_assignment(labels, r)["nmi"] for r in runs])
  want_f1 = np.mean([f1_from_pair_confusion(labels, r) for r in runs])
  out = clustering_metrics(x, labels, metric="cosine", num_seeds=2, seed=5)
  assert out["nmi"] == pytest.approx(want_nmi, rel=1e-6)
  assert out["f1"] == pytest.approx(want_f1, rel=1e-6)
  assert set(out) == {"nmi", "ami", "f1"}


def test_separated_clusters_score_one():
  centres = np.eye(4, dtype=np.float32) * 10
  labels = np.repeat(np.arange(4), 5)
  x = centres[labels] + 0.01 * np.random.default_rng(2).standard_normal((20, 4)).astype(np.float32)
  out = clustering_metrics(x, labels, metric="euclidean", num_seeds=1)
  assert out == pytest.approx({"nmi": 1.0, "ami": 1.0, "f1": 1.0})


@pytest.mark.parametrize("call, message", [
    (lambda x, y: clustering_metrics(x, np.zeros(len(x), np.int64)), "labels"),
    (lambda x, y: clustering_metrics(x[:0], y[:0]), "embeddings"),
    (lambda x, y: clustering_metrics(x, y[1:]), "labels"),
    (lambda x, y: clustering_metrics(np.full_like(x, np.nan), y), "embeddings"),
    (lambda x, y: clustering_metrics(x, y, num_seeds=0), "num_seeds"),
])
def test_bad_input_is_an_error_naming_the_argument(call, message):
  x = np.random.default_rng(3).standard_normal((12, 4)).astype(np.float32)
  y = np.repeat(np.arange(4), 3)
  with pytest.raises((ValueError, TypeError), match=message):
    call(x, y)
