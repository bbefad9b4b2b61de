"""evaluate(): the flat dict the training loop reads (keys, groups, numpy or jax inputs) and its input errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from metric_jax.evaluation import (clustering_metrics, evaluate, knn_accuracy, retrieval_metrics,
                                   verification_accuracy)
from tests.evaluation import _reference as ref


@pytest.fixture(scope="module")
def data():
  return ref.clustered(np.random.default_rng(0), 8, 10, 6, 1.0)


def test_default_groups_and_keys(data):
  x, labels = data
  out = evaluate(jnp.asarray(x), jnp.asarray(labels))
  assert list(out) == ["recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision", "map@r",
                       "nmi", "ami", "f1"]
  assert all(type(v) is float for v in out.values())
  want = retrieval_metrics(x, labels)
  want.update(clustering_metrics(x, labels))
  assert out == pytest.approx(want)
  want_recall = ref.brute_recall_at_k(x, labels, x, labels, (1, 2, 4, 8), "cosine", leave_one_out=True)
  assert {k: out[k] for k in want_recall} == pytest.approx(want_recall)


def test_all_groups_with_a_reference_set(data):
  x, labels = data
  out = evaluate(x[:40], labels[:40], x[40:], labels[40:], ks=(1, 3),
                 metrics=("retrieval", "classification", "verification"), metric="euclidean",
                 verification_negatives=(1, 3))
  assert {"recall@1", "recall@3", "knn_accuracy", "svm_accuracy", "verification@1", "verification@3"} <= set(out)
  assert out["verification@3"] == verification_accuracy(x[:40], labels[:40], num_negatives=3,
                                                        metric="euclidean")["verification@3"]
  assert out["recall@1"] == pytest.approx(ref.brute_recall_at_k(x[:40], labels[:40], x[40:], labels[40:], (1,),
                                                                "euclidean", leave_one_out=False)["recall@1"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(metrics=("ranking",)), "metrics"),
    (dict(metrics=("classification",)), "reference_embeddings"),
    (dict(metric="l1"), "metric"),
    (dict(query_labels=np.zeros(80, np.int64)), "single class"),
    (dict(query_labels=np.arange(79)), "query_labels"),
    (dict(query_embeddings=np.zeros((0, 6), np.float32), query_labels=np.zeros(0, np.int64)), "query_embeddings"),
    (dict(query_embeddings=np.full((80, 6), np.nan, np.float32)), "query_embeddings"),
    (dict(reference_labels=np.arange(3)), "reference_labels"),
])
def test_bad_input_is_an_error_naming_the_argument(data, kwargs, message):
  x, labels = data
  args = dict(query_embeddings=x, query_labels=labels)
  args.update(kwargs)
  with pytest.raises((ValueError, TypeError), match=message):
    evaluate(**args)


def test_multi_hot_labels_in_the_retrieval_group(data):
  x, labels = data
  hot = np.eye(labels.max() + 1, dtype=bool)[labels]
  hot[::3, 0] = True  # overlapping labels: every third row also carries label 0
  out = evaluate(x, hot, metrics=("retrieval",))
  assert out == retrieval_metrics(x, hot)
  one_hot = np.eye(labels.max() + 1, dtype=bool)[labels]
  assert evaluate(x[:50], one_hot[:50], x[50:], one_hot[50:], metrics="retrieval") == evaluate(
      x[:50], labels[:50], x[50:], labels[50:], metrics="retrieval")


@pytest.mark.parametrize("metrics", [("retrieval", "clustering"), ("verification",), ("classification",)])
def test_multi_hot_labels_in_single_label_groups_name_the_argument(data, metrics):
  x, labels = data
  hot = np.eye(labels.max() + 1, dtype=bool)[labels]
  with pytest.raises(ValueError, match="query_labels.*multi-hot"):
    evaluate(x[:40], hot[:40], x[40:], hot[40:], metrics=metrics)


@pytest.mark.parametrize("call, message", [
    (lambda x, hot: clustering_metrics(x, hot), "`labels` must be 1-D class ids"),
    (lambda x, hot: verification_accuracy(x, hot), "`labels` must be 1-D class ids"),
    (lambda x, hot: knn_accuracy(x, hot, x, hot), "`train_labels` must be 1-D class ids"),
])
def test_single_label_metrics_refuse_multi_hot_labels(data, call, message):
  x, labels = data
  with pytest.raises(ValueError, match=message):
    call(x, np.eye(labels.max() + 1, dtype=bool)[labels])
