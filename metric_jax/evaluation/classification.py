"""Classification accuracy on learned features (S0, PairNet): kNN vote, linear SVM, and a softmax head.

The features of a training set are the labelled references; test features are classified by

  kNN:     the majority label among the `k` nearest training features (exact, `knn`); a tie between labels goes to
           the smallest label, as scikit-learn's `KNeighborsClassifier` breaks it;
  SVM:     scikit-learn's `LinearSVC` (one-vs-rest, squared hinge, `C`) fitted on the training features;
  softmax: the argmax of a classifier's logits.

References:
  The PairNet paper (seed S0 of DESIGN.md, classification with a pairwise local distribution constraint): siamese /
  pairloss / pair-soft features are classified by kNN and SVM, singlenet / pairnet by their softmax layer.
"""

from __future__ import annotations

import numpy as np
from sklearn import svm as sk_svm

from metric_jax.evaluation import _inputs
from metric_jax.evaluation.knn import DEFAULT_CHUNK_SIZE, knn


def _check_sets(train_embeddings, train_labels, test_embeddings, test_labels):
  train = _inputs.as_embeddings(train_embeddings, "train_embeddings")
  train_labels = _inputs.as_labels(train_labels, train.shape[0], "train_labels")
  test = _inputs.as_embeddings(test_embeddings, "test_embeddings")
  test_labels = _inputs.as_labels(test_labels, test.shape[0], "test_labels")
  _inputs.check_same_dim(test, train, "train_embeddings")
  if np.unique(train_labels).size < 2:
    raise ValueError("`train_labels` hold a single class; classification needs at least two classes.")
  return train, train_labels, test, test_labels


def knn_predict(train_embeddings, train_labels, test_embeddings, *, k: int = 1, metric: str = "cosine",
                chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
  """Majority label `[T]` among the `k` nearest training features of each test feature (ties: smallest label)."""
  train_labels = np.asarray(train_labels)
  index, _ = knn(test_embeddings, train_embeddings, k, metric=metric, chunk_size=chunk_size)
  classes, neighbour_class = np.unique(train_labels[index], return_inverse=True)
  neighbour_class = neighbour_class.reshape(index.shape)
  votes = np.zeros((index.shape[0], classes.size), np.int64)
  np.add.at(votes, (np.arange(index.shape[0])[:, None], neighbour_class), 1)
  return classes[np.argmax(votes, axis=1)]  # argmax takes the first (smallest) label among equal vote counts


def knn_accuracy(train_embeddings, train_labels, test_embeddings, test_labels, *, k: int = 1,
                 metric: str = "cosine", chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
  """Fraction of test features whose kNN vote over the training features gives their label."""
  train, train_labels, test, test_labels = _check_sets(train_embeddings, train_labels, test_embeddings, test_labels)
  k = _inputs.check_positive_int(k, "k")
  predicted = knn_predict(train, train_labels, test, k=k, metric=metric, chunk_size=chunk_size)
  return float(np.mean(predicted == test_labels))


def svm_accuracy(train_embeddings, train_labels, test_embeddings, test_labels, *, c: float = 1.0,
                 metric: str = "cosine", seed: int = 0, max_iter: int = 5000) -> float:
  """Accuracy of a linear SVM (`LinearSVC`, regularization `c`) trained on the training features.

  With `metric="cosine"` both sets are L2-normalized first, the geometry the features were trained for.
  """
  train, train_labels, test, test_labels = _check_sets(train_embeddings, train_labels, test_embeddings, test_labels)
  if not c > 0:
    raise ValueError(f"`c` must be positive, got {c}.")
  if _inputs.check_metric(metric) == "cosine":
    train = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)
    test = test / np.maximum(np.linalg.norm(test, axis=1, keepdims=True), 1e-12)
  model = sk_svm.LinearSVC(C=c, random_state=seed, max_iter=max_iter)
  model.fit(train, train_labels)
  return float(np.mean(model.predict(test) == test_labels))


def softmax_accuracy(logits, labels) -> float:
  """Fraction of rows of `logits [N, C]` whose argmax is `labels [N]`."""
  logits = _inputs.as_embeddings(logits, "logits")
  labels = _inputs.as_labels(labels, logits.shape[0], "labels")
  if labels.min() < 0 or labels.max() >= logits.shape[1]:
    raise ValueError(f"`labels` must lie in [0, {logits.shape[1]}) for {logits.shape[1]} logits, got range "
                     f"[{labels.min()}, {labels.max()}].")
  return float(np.mean(np.argmax(logits, axis=1) == labels))


def classification_metrics(train_embeddings, train_labels, test_embeddings, test_labels, *, knn_k: int = 1,
                           metric: str = "cosine", svm_c: float = 1.0, seed: int = 0,
                           chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict:
  """`{"knn_accuracy", "svm_accuracy"}` of test features classified with the training features."""
  return {
      "knn_accuracy": knn_accuracy(train_embeddings, train_labels, test_embeddings, test_labels, k=knn_k,
                                   metric=metric, chunk_size=chunk_size),
      "svm_accuracy": svm_accuracy(train_embeddings, train_labels, test_embeddings, test_labels, c=svm_c,
                                   metric=metric, seed=seed),
  }


__all__ = ["classification_metrics", "knn_accuracy", "knn_predict", "svm_accuracy", "softmax_accuracy"]
