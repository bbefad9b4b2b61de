"""kNN / SVM / softmax accuracy against scikit-learn's classifiers and a hand count."""

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import LinearSVC

from metric_jax.evaluation import classification_metrics, knn_accuracy, knn_predict, softmax_accuracy
from tests.evaluation import _reference as ref


@pytest.fixture(scope="module")
def split():
  x, labels = ref.clustered(np.random.default_rng(0), 6, 30, 10, 1.5)
  return x[:120], labels[:120], x[120:], labels[120:]


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("metric, sk_metric", [("cosine", "cosine"), ("euclidean", "euclidean")])
def test_knn_accuracy_matches_sklearn(split, k, metric, sk_metric):
  train, train_labels, test, test_labels = split
  want = KNeighborsClassifier(n_neighbors=k, metric=sk_metric, algorithm="brute").fit(train, train_labels)
  assert knn_accuracy(train, train_labels, test, test_labels, k=k, metric=metric) == pytest.approx(
      want.score(test, test_labels))


def test_vote_ties_go_to_the_smallest_label():
  train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], np.float32)
  # Two neighbours, one of label 5 and one of label 2: a 1-1 tie, resolved to 2.
  predicted = knn_predict(train, np.array([5, 2, 7, 7]), np.array([[1.0, 0.05]], np.float32), k=2, metric="dot")
  assert predicted.tolist() == [2]


def test_svm_accuracy_matches_linear_svc(split):
  train, train_labels, test, test_labels = split
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  want = LinearSVC(C=0.5, random_state=0, max_iter=5000).fit(unit(train), train_labels).score(unit(test), test_labels)
  out = classification_metrics(train, train_labels, test, test_labels, svm_c=0.5, metric="cosine")
  assert out["svm_accuracy"] == pytest.approx(want)
  assert set(out) == {"knn_accuracy", "svm_accuracy"}


def test_softmax_accuracy_by_hand():
  logits = np.array([[0.1, 2.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.5]], np.float32)
  assert softmax_accuracy(logits, np.array([1, 0, 0, 2])) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="labels"):
    softmax_accuracy(logits, np.array([1, 0, 3, 2]))


@pytest.mark.parametrize("call, message", [
    (lambda tr, trl, te, tel: knn_accuracy(tr, np.zeros_like(trl), te, tel), "train_labels"),
    (lambda tr, trl, te, tel: knn_accuracy(tr, trl, te[:, :2], tel), "train_embeddings"),
    (lambda tr, trl, te, tel: knn_accuracy(tr, trl, te, tel[:-1]), "test_labels"),
    (lambda tr, trl, te, tel: knn_accuracy(tr, trl, te[:0], tel[:0]), "test_embeddings"),
    (lambda tr, trl, te, tel: knn_accuracy(tr, trl, te * np.nan, tel), "test_embeddings"),
])
def test_bad_input_is_an_error_naming_the_argument(split, call, message):
  with pytest.raises((ValueError, TypeError), match=message):
    call(*split)
