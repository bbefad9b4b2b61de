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


# Multi-hot labels [N, L]: a reference is relevant when it shares at least one label with the query.

def one_hot(labels):
  return np.eye(labels.max() + 1, dtype=bool)[labels]


def shares_label(a, b):
  """PML `label_comparison_fn` for multi-hot rows (PML casts labels to float): at least one common label."""
  return (a * b).sum(-1) > 0


def pml_multi_hot(queries, query_labels, references=None, reference_labels=None, knn_func=None):
  calculator = AccuracyCalculator(include=tuple(PML_KEYS), k="max_bin_count", knn_func=knn_func,
                                  label_comparison_fn=shares_label, device=torch.device("cpu"))
  if references is None:
    out = calculator.get_accuracy(queries, query_labels)
  else:
    out = calculator.get_accuracy(queries, query_labels, references, reference_labels, ref_includes_query=False)
  return {ours: out[theirs] for theirs, ours in PML_KEYS.items()}


def brute_multi_hot(queries, query_labels, references, reference_labels, ks, metric, leave_one_out):
  """Every metric by a loop over queries: a float64 stable sort of each row and set intersections of the labels."""
  scores = ref.score_matrix(queries, references, metric)
  sets_q = [set(np.flatnonzero(row)) for row in query_labels]
  sets_r = [set(np.flatnonzero(row)) for row in reference_labels]
  per_query = []
  for i in range(len(queries)):
    order = np.argsort(-scores[i], kind="stable")
    if leave_one_out:
      order = order[order != i]
    rel = np.array([bool(sets_q[i] & sets_r[j]) for j in order])
    r = int(rel.sum())
    if r == 0:
      continue
    hits = np.cumsum(rel)
    row = {f"recall@{k}": float(rel[:k].any()) for k in ks}
    row["precision@1"] = float(rel[0])
    row["r_precision"] = hits[r - 1] / r
    row["map@r"] = sum(hits[j] / (j + 1) for j in range(r) if rel[j]) / r
    per_query.append(row)
  return {key: float(np.mean([row[key] for row in per_query])) for key in per_query[0]}


@pytest.fixture(scope="module")
def multi_hot_set():
  """Clustered embeddings whose rows carry their cluster's label plus 0-2 random extra labels (overlapping classes),
  a few rows without any label (lone queries) and one label nobody else has."""
  rng = np.random.default_rng(4)
  x, labels = ref.clustered(rng, 10, 12, 8, 1.1)
  multi = one_hot(labels)
  multi = np.concatenate([multi, np.zeros((len(x), 2), bool)], axis=1)  # 12 label columns
  for i in range(len(x)):
    multi[i, rng.choice(10, rng.integers(0, 3), replace=False)] = True
  multi[:3] = False        # no label: lone
  multi[3, :] = False
  multi[3, 11] = True      # label 11 only here: lone too
  return x, multi.astype(np.int32)


def test_one_hot_labels_give_identical_results(clustered_set, tied_set):
  for (x, labels), metric in ((clustered_set, "cosine"), (tied_set, "dot")):
    want = retrieval_metrics(x, labels, ks=KS, metric=metric, chunk_size=64)
    assert retrieval_metrics(x, one_hot(labels), ks=KS, metric=metric, chunk_size=64) == want
    assert retrieval_metrics(x, one_hot(labels).astype(np.int8), ks=KS, metric=metric) == want
    gallery = dict(ks=KS, metric=metric)
    want = retrieval_metrics(x[:90], labels[:90], x[90:], labels[90:], **gallery)
    hot = one_hot(labels)
    assert retrieval_metrics(x[:90], hot[:90], x[90:], hot[90:], **gallery) == want


def test_hand_computed_overlapping_labels_gallery():
  # Labels A, B, C. References on a line: r0 0 {A}, r1 1 {B}, r2 2 {A, C}, r3 3 {C}, r4 4 {}, r5 5 {B, C}.
  # q0 at 0.2 {A}:    order r0 r1 r2 r3 r4 r5, relevant r0, r2 (R = 2):             rel 1 0 1 0 0 0
  # q1 at 2.9 {B}:    order r3 r2 r4 r1 r5 r0, relevant r1, r5 (R = 2):             rel 0 0 0 1 1 0
  # q2 at 4.4 {A, C}: order r4 r5 r3 r2 r1 r0, relevant r0, r2, r3, r5 (R = 4):     rel 0 1 1 1 0 1
  # q3 at 1.2 {}:     no label, R = 0: lone, left out.
  # Recall@1 1/3, Recall@2 2/3 (q0, q2), Recall@4 1; precision@1 1/3;
  # R-precision (1/2 + 0 + 3/4) / 3; MAP@R ((1/1) / 2 + 0 + (1/2 + 2/3 + 3/4) / 4) / 3.
  references = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]], np.float32)
  reference_labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 1], [0, 0, 0], [0, 1, 1]], bool)
  queries = np.array([[0.2], [2.9], [4.4], [1.2]], np.float32)
  query_labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]], bool)
  out = retrieval_metrics(queries, query_labels, references, reference_labels, ks=(1, 2, 4), metric="euclidean")
  assert out["recall@1"] == pytest.approx(1 / 3)
  assert out["recall@2"] == pytest.approx(2 / 3)
  assert out["recall@4"] == pytest.approx(1.0)
  assert out["precision@1"] == pytest.approx(1 / 3)
  assert out["r_precision"] == pytest.approx((1 / 2 + 0 + 3 / 4) / 3)
  assert out["map@r"] == pytest.approx((1 / 2 + 0 + (1 / 2 + 2 / 3 + 3 / 4) / 4) / 3)


def test_hand_computed_overlapping_labels_leave_one_out():
  # p0 0 {A}, p1 1 {A, B}, p2 3 {B}, p3 7 {C}, p4 12 {B, C}; R = 1, 3, 2, 1, 3 (itself excluded).
  # Neighbours and relevance: p0: p1 p2 p3 p4 -> 1 0 0 0;  p1: p0 p2 p3 p4 -> 1 1 0 1;  p2: p1 p0 p3 p4 -> 1 0 0 1;
  #                           p3: p2 p4 p1 p0 -> 0 1 0 0;  p4: p3 p2 p1 p0 -> 1 1 1 0.
  # Recall@1 4/5, Recall@2 1; R-precision = MAP@R = (1 + 2/3 + 1/2 + 0 + 1) / 5.
  x = np.array([[0.0], [1.0], [3.0], [7.0], [12.0]], np.float32)
  labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]], np.int64)
  out = retrieval_metrics(x, labels, ks=(1, 2), metric="euclidean")
  assert out["recall@1"] == pytest.approx(4 / 5)
  assert out["recall@2"] == pytest.approx(1.0)
  assert out["precision@1"] == pytest.approx(4 / 5)
  assert out["r_precision"] == pytest.approx((1 + 2 / 3 + 1 / 2 + 0 + 1) / 5)
  assert out["map@r"] == pytest.approx((1 + 2 / 3 + 1 / 2 + 0 + 1) / 5)


def test_multi_hot_leave_one_out_matches_pml_and_brute_force(multi_hot_set):
  x, labels = multi_hot_set
  ours = retrieval_metrics(x, labels, ks=KS, metric="cosine", chunk_size=48)
  want = pml_multi_hot(x, labels, knn_func=StableKNN("cosine"))
  brute = brute_multi_hot(x, labels, x, labels, KS, "cosine", leave_one_out=True)
  assert set(ours) == set(brute)
  for key in brute:
    assert ours[key] == pytest.approx(brute[key], abs=1e-12), key
  for key in want:
    assert ours[key] == pytest.approx(want[key], abs=1e-12), key


def test_multi_hot_gallery_matches_pml_and_brute_force(multi_hot_set):
  x, labels = multi_hot_set
  queries, query_labels, references, reference_labels = x[:50], labels[:50], x[50:], labels[50:]
  ours = retrieval_metrics(queries, query_labels, references, reference_labels, ks=KS, metric="euclidean")
  want = pml_multi_hot(queries, query_labels, references, reference_labels, knn_func=StableKNN("euclidean"))
  brute = brute_multi_hot(queries, query_labels, references, reference_labels, KS, "euclidean", leave_one_out=False)
  for key in brute:
    assert ours[key] == pytest.approx(brute[key], abs=1e-12), key
  for key in want:
    assert ours[key] == pytest.approx(want[key], abs=1e-12), key


def test_multi_hot_blocked_label_comparisons_equal_unblocked(multi_hot_set, monkeypatch):
  """The label-set counts and the neighbour relevance run in bounded blocks; tiny blocks give the same numbers."""
  from metric_jax.evaluation import retrieval
  x, labels = multi_hot_set
  want = retrieval_metrics(x, labels, ks=KS)
  monkeypatch.setattr(retrieval, "_WORK_ELEMENTS", 7)
  assert retrieval_metrics(x, labels, ks=KS) == want


def test_metrics_from_neighbors_multi_hot_equals_class_ids():
  neighbours = np.array([[7, 1, 7, 7], [1, 8, 1, 1], [1, 1, 1, 1]])
  query = np.array([7, 8, 9])
  r = np.array([3, 1, 0])
  hot = np.eye(10, dtype=bool)
  assert metrics_from_neighbors(hot[neighbours], hot[query], r, ks=(1, 2)) == metrics_from_neighbors(
      neighbours, query, r, ks=(1, 2))


@pytest.mark.parametrize("call, message", [
    (lambda x, y: retrieval_metrics(x, y, x, np.argmax(y, 1)), "reference_labels"),    # kinds differ
    (lambda x, y: retrieval_metrics(x, y, x, y[:, :2]), "reference_labels"),            # L differs
    (lambda x, y: retrieval_metrics(x, y[:, :1]), "query_labels"),                      # [N, 1] is ambiguous
    (lambda x, y: retrieval_metrics(x, 2 * y.astype(np.int32)), "query_labels"),        # not 0/1
    (lambda x, y: retrieval_metrics(x, y.astype(np.float32)), "query_labels"),          # not bool / integer
    (lambda x, y: retrieval_metrics(x, np.ones_like(y)), "trivially correct"),          # all share every label
    (lambda x, y: retrieval_metrics(x, np.zeros_like(y)), "no query has another sample"),
    (lambda x, y: metrics_from_neighbors(y[:, None, :], np.argmax(y, 1), np.ones(len(y))), "neighbor_labels"),
])
def test_multi_hot_bad_input_is_an_error_naming_the_argument(call, message):
  x = np.random.default_rng(3).standard_normal((12, 4)).astype(np.float32)
  y = one_hot(np.repeat(np.arange(4), 3))
  with pytest.raises((ValueError, TypeError), match=message):
    call(x, y)
