"""Builders on the real files: scikit-learn digits (bundled), MNIST test set and Omniglot small1/small2 (shared datasets).

Reference values come from reading the raw files directly here (gzip + numpy for IDX, zipfile + pillow for Omniglot,
sklearn for digits), independently of the builders. tfds shuffles records when writing, so comparisons are order-free.
"""

import collections
import gzip
import hashlib
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from metric_jax import data
from tests.conftest import require_dataset_file


def _row_hashes(images, labels):
  return collections.Counter((int(l), hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest())
                             for im, l in zip(images, labels))


def test_sklearn_digits_all_1797_images(data_dir):
  from sklearn.datasets import load_digits
  images, labels = data.load_arrays("sklearn_digits", "train", data_dir=data_dir)
  assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
  assert labels.shape == (1797,) and labels.dtype == np.int32 and set(labels.tolist()) == set(range(10))
  digits = load_digits()
  expected = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)[..., None]
  assert _row_hashes(images, labels) == _row_hashes(expected, digits.target)


@pytest.fixture(scope="module")
def mnist_dir(shared_datasets):
  require_dataset_file(shared_datasets, "mnist", "t10k-images-idx3-ubyte.gz")
  require_dataset_file(shared_datasets, "mnist", "t10k-labels-idx1-ubyte.gz")
  return shared_datasets / "mnist"


def test_mnist_test_split_matches_idx_files(mnist_dir, data_dir):
  images, labels = data.load_arrays("mnist", "test", data_dir=data_dir, manual_dir=mnist_dir)
  assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
  assert labels.shape == (10000,) and labels.dtype == np.int32 and labels.min() == 0 and labels.max() == 9
  with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz") as f:
    raw_images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(10000, 28, 28, 1)
  with gzip.open(mnist_dir / "t10k-labels-idx1-ubyte.gz") as f:
    raw_labels = np.frombuffer(f.read(), np.uint8, offset=8)
  assert _row_hashes(images, labels) == _row_hashes(raw_images, raw_labels)
  builder = data.get_builder("mnist", data_dir=data_dir, manual_dir=mnist_dir)
  assert set(builder.info.splits.keys()) == {"test"}
  assert builder.name == "metric_jax_mnist"  # does not clash with tfds' own `mnist`


def test_mnist_train_request_names_the_missing_file(mnist_dir, data_dir):
  with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz.*" + str(mnist_dir).replace("/", ".")):
    data.load_arrays("mnist", "train", data_dir=data_dir, manual_dir=mnist_dir)


@pytest.fixture(scope="module")
def omniglot_dir(shared_datasets):
  require_dataset_file(shared_datasets, "omniglot", "images_background_small1.zip")
  require_dataset_file(shared_datasets, "omniglot", "images_background_small2.zip")
  return shared_datasets / "omniglot"


def _zip_reference(path):
  """(decoded images, (alphabet, character) per image) straight from the zip."""
  images, keys = [], []
  with zipfile.ZipFile(path) as zf:
    for name in zf.namelist():
      if name.endswith(".png"):
        with Image.open(io.BytesIO(zf.read(name))) as im:
          images.append(np.asarray(im.convert("L"), np.uint8)[..., None])
        keys.append(tuple(name.split("/")[1:3]))
  return images, keys


@pytest.mark.parametrize("split,num_classes,num_images", [("small1", 136, 2720), ("small2", 156, 3120)])
def test_omniglot_small_splits(omniglot_dir, data_dir, split, num_classes, num_images):
  images, labels = data.load_arrays("omniglot", split, data_dir=data_dir, manual_dir=omniglot_dir)
  assert images.shape == (num_images, 105, 105, 1) and images.dtype == np.uint8
  assert labels.dtype == np.int32 and set(labels.tolist()) == set(range(num_classes))
  assert set(np.unique(images).tolist()) <= {0, 255}
  ref_images, ref_keys = _zip_reference(omniglot_dir / f"images_background_{split}.zip")
  ref_labels = [sorted(set(ref_keys)).index(k) for k in ref_keys]  # sorted (alphabet, character) order
  assert _row_hashes(images, labels) == _row_hashes(ref_images, ref_labels)
  builder = data.get_builder("omniglot", data_dir=data_dir, manual_dir=omniglot_dir)
  assert set(builder.info.splits.keys()) == {"small1", "small2"}
  with pytest.raises(FileNotFoundError, match=r"images_background\.zip"):
    data.load_arrays("omniglot", "background", data_dir=data_dir, manual_dir=omniglot_dir)


def test_omniglot_records_carry_alphabet_and_character(omniglot_dir, data_dir):
  builder = data.get_builder("omniglot", data_dir=data_dir, manual_dir=omniglot_dir)
  source = builder.as_data_source(split="small1")
  records = source.__getitems__(range(len(source)))
  alphabets = {r["alphabet"].decode() if isinstance(r["alphabet"], bytes) else r["alphabet"] for r in records}
  assert len(alphabets) == 5
  per_label = collections.defaultdict(set)
  for r in records:
    per_label[int(r["label"])].add((r["alphabet"], r["character"]))
  assert all(len(v) == 1 for v in per_label.values())  # a label is one (alphabet, character)


def test_omniglot_retrieval_small_protocol_is_class_disjoint(omniglot_dir, data_dir):
  train, test = data.retrieval_split("omniglot", data_dir=data_dir, manual_dir=omniglot_dir)
  assert (train.num_classes, test.num_classes) == (136, 156)
  assert train.images.shape[0] == 2720 and test.images.shape[0] == 3120
  assert set(train.labels.tolist()) == set(range(136)) and set(test.labels.tolist()) == set(range(156))
  with pytest.raises(ValueError, match="protocol"):
    data.retrieval_split("omniglot", protocol="tiny", data_dir=data_dir, manual_dir=omniglot_dir)


def test_mnist_limited_data_protocol(mnist_dir, data_dir):
  train, test = data.limited_data_split("mnist", 60, seed=0, data_dir=data_dir, manual_dir=mnist_dir)
  assert train.images.shape == (600, 28, 28, 1) and test.images.shape == (5000, 28, 28, 1)
  assert np.bincount(train.labels).tolist() == [60] * 10
  full_images, full_labels = data.load_arrays("mnist", "test", data_dir=data_dir, manual_dir=mnist_dir)
  # Stratified halves: each class's test count is within one of half its count in the 10k images.
  assert np.all(np.abs(np.bincount(test.labels) - np.bincount(full_labels) / 2) <= 1)
  # Pool and test are disjoint: no training image row is in the test set, and every row comes from the 10k set.
  train_rows = _row_hashes(train.images, train.labels)
  test_rows = _row_hashes(test.images, test.labels)
  full_rows = _row_hashes(full_images, full_labels)
  assert not set(train_rows) & set(test_rows)
  assert all(full_rows[k] >= n for k, n in (train_rows + test_rows).items())
  again, test_again = data.limited_data_split("mnist", 60, seed=0, data_dir=data_dir, manual_dir=mnist_dir)
  other, test_other = data.limited_data_split("mnist", 60, seed=1, data_dir=data_dir, manual_dir=mnist_dir)
  np.testing.assert_array_equal(again.images, train.images)
  assert not np.array_equal(other.images, train.images)
  np.testing.assert_array_equal(test_other.labels, test.labels)  # the test set does not depend on the draw's seed


def test_sklearn_digits_retrieval_split(data_dir):
  from sklearn.datasets import load_digits
  target = load_digits().target
  train, test = data.retrieval_split("sklearn_digits", data_dir=data_dir)
  assert train.num_classes == test.num_classes == 5
  assert train.images.shape[0] == (target < 5).sum() and test.images.shape[0] == (target >= 5).sum()
  assert np.bincount(test.labels).tolist() == [(target == c).sum() for c in range(5, 10)]
