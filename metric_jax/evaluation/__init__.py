"""Evaluation: embedding extraction, exact chunked kNN, retrieval / clustering / classification / verification metrics.

`evaluate` is the one entry point the training loop and the experiments call; it returns a flat dict of Python floats
with stable keys:

  "retrieval":      recall@K for each K in `ks`, precision@1, r_precision, map@r   (`retrieval.py`);
                    class ids [N] or multi-hot labels [N, L] (relevant = a shared label)
  "clustering":     nmi, ami, f1 of k-means with k = number of classes           (`clustering.py`)
  "classification": knn_accuracy, svm_accuracy; the reference set is the labelled training set, the query set
                    is classified                                                (`classification.py`)
  "verification":   verification@1, verification@71 on the query set            (`verification.py`)
"""

from __future__ import annotations

import numpy as np

from metric_jax.evaluation import _inputs
from metric_jax.evaluation.classification import (classification_metrics, knn_accuracy, knn_predict, softmax_accuracy,
                                                  svm_accuracy)
from metric_jax.evaluation.clustering import clustering_metrics, pairwise_f1, scores_from_assignment
from metric_jax.evaluation.extract import extract_embeddings
from metric_jax.evaluation.knn import DEFAULT_CHUNK_SIZE, knn
from metric_jax.evaluation.retrieval import metrics_from_neighbors, metrics_from_relevance, retrieval_metrics
from metric_jax.evaluation.verification import verification_accuracy

METRIC_GROUPS = ("retrieval", "clustering", "classification", "verification")


def evaluate(query_embeddings, query_labels, reference_embeddings=None, reference_labels=None, *, ks=(1, 2, 4, 8),
             metrics=("retrieval", "clustering"), metric: str = "cosine", chunk_size: int = DEFAULT_CHUNK_SIZE,
             seed: int = 0, num_kmeans_seeds: int = 3, knn_k: int = 1, svm_c: float = 1.0,
             verification_negatives=(1, 71)) -> dict:
  """Evaluates embeddings with the chosen metric groups and returns one flat dict of Python floats.

  Args:
    query_embeddings: float `[Q, D]` (numpy or jax), e.g. the test set.
    query_labels: integer class ids `[Q]`, or multi-hot `[Q, L]` (boolean or 0/1; a reference is relevant to a query
      when they share at least one label). Multi-hot labels are accepted by the `retrieval` group only; the other
      groups need one class per row and raise a `ValueError` naming this argument.
    reference_embeddings: float `[N, D]` or None. Retrieval: None means leave-one-out retrieval within the query set
      (each query's own row excluded), else the queries search this disjoint gallery. Classification: required, the
      labelled training features that classify the queries.
    reference_labels: `[N]` or `[N, L]`, the same kind as `query_labels`, exactly when `reference_embeddings` is
      given.
    ks: the K of each `recall@K`.
    metrics: groups among `retrieval`, `clustering`, `classification`, `verification`.
    metric: `cosine` | `dot` | `euclidean` | `squared_euclidean`, for kNN, k-means input and verification scores.
    chunk_size: queries per kNN chunk (bounds memory at about `4 * chunk_size * N` bytes).
    seed: seed of k-means (runs `seed .. seed + num_kmeans_seeds - 1`), the SVM and the verification draws.
    num_kmeans_seeds: k-means runs averaged for `nmi`, `ami`, `f1` (clustering is on the query set).
    knn_k: neighbours voting in `knn_accuracy`.
    svm_c: regularization of the linear SVM.
    verification_negatives: the n of each `verification@n`.

  Returns:
    Flat dict: `recall@1`, `recall@2`, ..., `precision@1`, `r_precision`, `map@r`, `nmi`, `ami`, `f1`,
    `knn_accuracy`, `svm_accuracy`, `verification@1`, `verification@71` as selected by `metrics`.
  """
  if isinstance(metrics, str):
    metrics = (metrics,)
  metrics = tuple(metrics)
  if not metrics:
    raise ValueError("`metrics` must name at least one group.")
  for group in metrics:
    if group not in METRIC_GROUPS:
      raise ValueError(f"`metrics` must hold names among {METRIC_GROUPS}, got {group!r}.")
  _inputs.check_metric(metric)
  queries = _inputs.as_embeddings(query_embeddings, "query_embeddings")
  query_labels = _inputs.as_labels(query_labels, queries.shape[0], "query_labels", multi_hot=True)
  references = None
  if reference_embeddings is not None:
    references = _inputs.as_embeddings(reference_embeddings, "reference_embeddings")
    reference_labels = _inputs.as_labels(reference_labels, references.shape[0], "reference_labels", multi_hot=True)
    _inputs.check_same_dim(queries, references)
    _inputs.check_label_kinds(query_labels, reference_labels)
  elif reference_labels is not None:
    raise ValueError("`reference_labels` were given without `reference_embeddings`.")
  if _inputs.is_multi_hot(query_labels):
    single_label_groups = [group for group in metrics if group != "retrieval"]
    if single_label_groups:
      raise ValueError(f"`query_labels` are multi-hot {query_labels.shape}, but the {single_label_groups} group(s) "
                       "need one class id per row (k-means with k = number of classes, a classifier, class-based "
                       "verification tuples); with multi-hot labels evaluate metrics=('retrieval',).")

  out = {}
  if "retrieval" in metrics:
    out.update(retrieval_metrics(queries, query_labels, references, reference_labels, ks=ks, metric=metric,
                                 chunk_size=chunk_size))
  if "clustering" in metrics:
    out.update(clustering_metrics(queries, query_labels, metric=metric, num_seeds=num_kmeans_seeds, seed=seed))
  if "classification" in metrics:
    if references is None:
      raise ValueError("the `classification` group needs `reference_embeddings` / `reference_labels`: the labelled "
                       "training features that classify the queries.")
    out.update(classification_metrics(references, reference_labels, queries, query_labels, knn_k=knn_k,
                                      metric=metric, svm_c=svm_c, seed=seed, chunk_size=chunk_size))
  if "verification" in metrics:
    out.update(verification_accuracy(queries, query_labels, num_negatives=verification_negatives, metric=metric,
                                     seed=seed))
  return {key: float(value) for key, value in out.items()}


__all__ = [
    "evaluate", "extract_embeddings", "knn", "retrieval_metrics", "metrics_from_neighbors", "metrics_from_relevance",
    "clustering_metrics",
    "pairwise_f1", "scores_from_assignment", "classification_metrics", "knn_accuracy", "knn_predict", "svm_accuracy",
    "softmax_accuracy", "verification_accuracy", "METRIC_GROUPS",
]
