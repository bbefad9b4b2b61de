"""Clustering quality of embeddings: NMI, AMI and pairwise F1 of k-means with k = number of classes.

k-means is scikit-learn's (`KMeans`, Lloyd, k-means++ init, one init per seed); the scores are averaged over
`num_seeds` seeds. NMI and AMI are scikit-learn's `normalized_mutual_info_score` / `adjusted_mutual_info_score`
(arithmetic normalization, as pytorch-metric-learning reports them). Pairwise F1 counts pairs of samples: with
`TP` = pairs in the same class and the same cluster,

  precision = TP / #pairs in the same cluster,   recall = TP / #pairs in the same class,
  F1 = 2 * precision * recall / (precision + recall),

the F1 of Song et al. 2016 and Sohn 2016 (N-pair).

References:
  Song, Xiang, Jegelka, Savarese. "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016.
  Sohn. "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016.
  Manning, Raghavan, Schuetze. "Introduction to Information Retrieval", 2008, ch. 16.3 (pairwise F-measure).
"""

from __future__ import annotations

import numpy as np
from sklearn import cluster as sk_cluster
from sklearn import metrics as sk_metrics

from metric_jax.evaluation import _inputs


def _pairs(counts: np.ndarray) -> float:
  counts = counts.astype(np.float64)
  return float(np.sum(counts * (counts - 1) / 2))


def pairwise_f1(labels, cluster_labels) -> float:
  """Pairwise F1 between a class assignment `[N]` and a cluster assignment `[N]` (see module docstring).

  A clustering with no same-cluster pair (all singletons), or labels with no same-class pair, has F1 = 0.
  """
  labels = np.asarray(labels)
  cluster_labels = np.asarray(cluster_labels)
  if labels.shape != cluster_labels.shape or labels.ndim != 1:
    raise ValueError(f"`labels` {labels.shape} and `cluster_labels` {cluster_labels.shape} must be 1-D of equal length.")
  _, class_index = np.unique(labels, return_inverse=True)
  _, cluster_index = np.unique(cluster_labels, return_inverse=True)
  joint = np.unique(class_index.astype(np.int64) * (cluster_index.max() + 1) + cluster_index, return_counts=True)[1]
  true_positive = _pairs(joint)
  same_cluster = _pairs(np.bincount(cluster_index))
  same_class = _pairs(np.bincount(class_index))
  if true_positive == 0:
    return 0.0
  precision = true_positive / same_cluster
  recall = true_positive / same_class
  return float(2 * precision * recall / (precision + recall))


def scores_from_assignment(labels, cluster_labels) -> dict:
  """`{"nmi", "ami", "f1"}` of one cluster assignment against the class labels."""
  return {
      "nmi": float(sk_metrics.normalized_mutual_info_score(labels, cluster_labels)),
      "ami": float(sk_metrics.adjusted_mutual_info_score(labels, cluster_labels)),
      "f1": pairwise_f1(labels, cluster_labels),
  }


def kmeans_assignment(embeddings: np.ndarray, num_clusters: int, seed: int, *, max_iter: int = 300) -> np.ndarray:
  """Cluster index `[N]` from scikit-learn k-means (k-means++ init, one init) seeded with `seed`."""
  model = sk_cluster.KMeans(n_clusters=num_clusters, n_init=1, max_iter=max_iter, random_state=seed)
  return model.fit_predict(embeddings)


def clustering_metrics(embeddings, labels, *, metric: str = "cosine", num_seeds: int = 3, seed: int = 0,
                       max_iter: int = 300) -> dict:
  """NMI, AMI and pairwise F1 of k-means on `embeddings`, k = number of classes, averaged over seeds.

  Args:
    embeddings: float `[N, D]`.
    labels: integer `[N]`, at least two classes.
    metric: `cosine` clusters the L2-normalized embeddings (k-means on the unit sphere's chords, which ranks like
      cosine); any other metric clusters the raw embeddings.
    num_seeds: k-means runs, seeded `seed, seed + 1, ...`; the scores are their means.
    seed: first seed.
    max_iter: Lloyd iterations per run.

  Returns:
    `{"nmi": ..., "ami": ..., "f1": ...}` as Python floats.
  """
  _inputs.check_metric(metric)
  embeddings = _inputs.as_embeddings(embeddings, "embeddings")
  labels = _inputs.as_labels(labels, embeddings.shape[0], "labels")
  num_seeds = _inputs.check_positive_int(num_seeds, "num_seeds")
  num_classes = np.unique(labels).size
  if num_classes < 2:
    raise ValueError(f"`labels` hold {num_classes} class; clustering metrics need at least two classes.")
  if metric == "cosine":
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings = embeddings / np.where(norms > 0, norms, 1).astype(np.float32)
  runs = [scores_from_assignment(labels, kmeans_assignment(embeddings, num_classes, seed + i, max_iter=max_iter))
          for i in range(num_seeds)]
  return {key: float(np.mean([run[key] for run in runs])) for key in ("nmi", "ami", "f1")}


__all__ = ["clustering_metrics", "pairwise_f1", "scores_from_assignment", "kmeans_assignment"]
