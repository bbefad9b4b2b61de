"""Retrieval metrics against pytorch-metric-learning's `AccuracyCalculator` and a brute-force numpy Recall@K.

PML is configured like `retrieval_metrics`: `k="max_bin_count"` (every query sees its R nearest references), the
query set is its own reference with `ref_includes_query=True` for leave-one-out, and `ref_includes_query=False` for a
separate gallery. Where ties matter (integer embeddings with duplicates across classes) PML gets a `knn_func` that is a
float64 stable sort, i.e. the same lower-index-first tie rule; one case uses PML's own default faiss kNN on tie-free data.
Lone queries (no other sample of their class among the references) are left out by PML and by us, for every metric.
"""

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from metric_jax.evaluation import metrics_from_neighbors, retrieval_metrics
from tests.evaluation import _reference as ref

KS = (1, 2, 4, 8)
PML_KEYS = {"precision_at_1": "precision@1", "r_precision": "r_precision", "mean_average_precision_at_r": "map@r"}


class StableKNN:
  """PML `knn_func`: float64 full matrix, stable sort (lower index first on ties), self excluded when included."""

  def __init__(self, metric):
    self.metric = metric

  def __call__(self, query, k, reference, ref_includes_query=False):
    index, scores = ref.brute_knn(query.numpy(), reference.numpy(), k, self.metric, exclude_self=ref_includes_query)
    return torch.from_numpy(scores), torch.from_numpy(index)


def pml_metrics(queries, query_labels, references=None, reference_labels=None, knn_func=None):
  calculator = AccuracyCalculator(include=tuple(PML_KEYS), k="max_bin_count", knn_func=knn_func,
                                  device=torch.device("cpu"))
  if references is None:
    out = calculator.get_accuracy(queries, query_labels)  # reference = query, ref_includes_query=True
  else:
    out = calculator.get_accuracy(queries, query_labels, references, reference_labels, ref_includes_query=False)
  return {ours: out[theirs] for theirs, ours in PML_KEYS.items()}


def with_singletons(x, labels, count, rng):
  """Appends `count` rows of fresh classes that have one sample each (lone queries)."""
  extra = rng.standard_normal((count, x.shape[1])).astype(x.dtype)
  return np.concatenate([x, extra]), np.concatenate([labels, labels.max() + 1 + np.arange(count)])


@pytest.fixture(scope="module")
def clustered_set():
  rng = np.random.default_rng(0)
  x, labels = ref.clustered(rng, 15, 12, 16, 0.9)
  return with_singletons(x, labels, 4, rng)


@pytest.fixture(scope="module")
def tied_set():
  """Integer embeddings: dot products are exact, many scores tie; rows 60..69 duplicate row 5 under other labels."""
  rng = np.random.default_rng(1)
  x = rng.integers(-1, 2, (180, 6)).astype(np.float32)
  labels = rng.integers(0, 12, 180)
  x[60:70] = x[5]
  labels[60:70] = (labels[5] + 1 + np.arange(10)) % 12
  x, labels = with_singletons(x, labels, 3, rng)
  return np.round(x), labels


def test_leave_one_out_matches_pml_and_brute_force(clustered_set):
  x, labels = clustered_set
  ours = retrieval_metrics(x, labels, ks=KS, metric="cosine", chunk_size=64)
  want = pml_metrics(x, labels, knn_func=StableKNN("cosine"))
  want.update(ref.brute_recall_at_k(x, labels, x, labels, KS, "cosine", leave_one_out=True))
  assert set(ours) == set(want)
  for key in want:
    assert ours[key] == pytest.approx(want[key], abs=1e-12), key


def test_ties_and_duplicates_across_classes(tied_set):
  x, labels = tied_set
  ours = retrieval_metrics(x, labels, ks=KS, metric="dot", chunk_size=50)
  want = pml_metrics(x, labels, knn_func=StableKNN("dot"))
  want.update(ref.brute_recall_at_k(x, labels, x, labels, KS, "dot", leave_one_out=True))
  for key in want:
    assert ours[key] == pytest.approx(want[key], abs=1e-12), key


def test_separate_gallery_with_classes_missing_from_it():
  rng = np.random.default_rng(2)
  x, labels = ref.clustered(rng, 10, 14, 8, 1.0)
  queries, query_labels = x[:60], labels[:60]
  keep = labels[60:] != labels[0]  # the class of query 0 is absent from the gallery: its queries are lone
  references, reference_labels = x[60:][keep], labels[60:][keep]
  ours = retrieval_metrics(queries, query_labels, references, reference_labels, ks=KS, metric="euclidean")
  want = pml_metrics(queries, query_labels, references, reference_labels, knn_func=StableKNN("euclidean"))
  want.update(ref.brute_recall_at_k(queries, query_labels, references, reference_labels, KS, "euclidean",
                                    leave_one_out=False))
  for key in want:
    assert ours[key] == pytest.approx(want[key], abs=1e-12), key


def test_matches_pml_default_faiss_knn(clustered_set):
  x, labels = clustered_set
  x = x / np.linalg.norm(x, axis=1, keepdims=True)  # PML's default faiss IndexFlatL2 ranks like cosine on unit rows
  ours = retrieval_metrics(x, labels, ks=(1,), metric="cosine")
  want = pml_metrics(x, labels)
  for key in want:
    assert ours[key] == pytest.approx(want[key], abs=1e-12), key


def test_hand_computed_neighbour_lists():
  # Query 0 (label 7, R = 3): relevant at ranks 1, 3, 4 -> R-precision 2/3, MAP@R (1/1 + 2/3) / 3, Recall@2 = 1.
  # Query 1 (label 8, R = 1): first relevant at rank 2 -> precision@1 0, R-precision 0, MAP@R 0, Recall@2 = 1.
  # Query 2 (label 9, R = 0): lone, left out.
  neighbours = np.array([[7, 1, 7, 7], [1, 8, 1, 1], [1, 1, 1, 1]])
  out = metrics_from_neighbors(neighbours, np.array([7, 8, 9]), np.array([3, 1, 0]), ks=(1, 2))
  assert out["recall@1"] == pytest.approx(0.5)
  assert out["recall@2"] == pytest.approx(1.0)
  assert out["precision@1"] == pytest.approx(0.5)
  assert out["r_precision"] == pytest.approx((2 / 3 + 0) / 2)
  assert out["map@r"] == pytest.approx(((1 + 2 / 3) / 3 + 0) / 2)


@pytest.mark.parametrize("call, message", [
    (lambda x, y: retrieval_metrics(x, np.zeros(len(x), np.int64)), "single class"),
    (lambda x, y: retrieval_metrics(x, np.arange(len(x))), "no query has another sample"),
    (lambda x, y: retrieval_metrics(x, y[:-1]), "query_labels"),
    (lambda x, y: retrieval_metrics(x[:0], y[:0]), "query_embeddings"),
    (lambda x, y: retrieval_metrics(x, y, x[:, :1], y), "reference_embeddings"),
    (lambda x, y: retrieval_metrics(x, y, x, y[:3]), "reference_labels"),
    (lambda x, y: retrieval_metrics(x, y.astype(np.float32)), "query_labels"),
    (lambda x, y: retrieval_metrics(x, y, ks=(100,)), "ks"),
    (lambda x, y: retrieval_metrics(x, y, ks=(0,)), "ks"),
    (lambda x, y: retrieval_metrics(np.where(np.eye(len(x), 4, dtype=bool), np.nan, x), y), "query_embeddings"),
])
def test_bad_input_is_an_error_naming_the_argument(call, message):
  x = np.random.default_rng(3).standard_normal((12, 4)).astype(np.float32)
  y = np.repeat(np.arange(4), 3)
  with pytest.raises((ValueError, TypeError), match=message):
    call(x, y)
