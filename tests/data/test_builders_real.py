"""Builders on the real files: scikit-learn digits (bundled), MNIST (60k train + 10k test) and Omniglot small1/small2
(shared datasets).

Reference values come from reading the raw files directly here (gzip + numpy for IDX, zipfile + pillow for Omniglot,
sklearn for digits), independently of the builders. tfds shuffles records when writing, so comparisons are order-free.
"""

import collections
import gzip
import hashlib
import io
import shutil
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


MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
# Published facts about MNIST (LeCun et al. 1998), independent of the files and of the builder: images per digit 0..9,
# and the pixel mean / std over all pixels scaled to [0, 1] (the train values are the usual normalisation constants
# 0.1307 / 0.3081; the test values 0.1325 / 0.3105).
MNIST_COUNTS = {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}
MNIST_MEAN_STD = {"train": (0.1307, 0.3081), "test": (0.1325, 0.3105)}


@pytest.fixture(scope="module")
def mnist_dir(shared_datasets):
  for files in MNIST_FILES.values():
    for name in files:
      require_dataset_file(shared_datasets, "mnist", name)
  return shared_datasets / "mnist"


def _raw_idx(mnist_dir, split):
  """(images [N, 28, 28, 1], labels [N]) straight from the gzip IDX files: 16- and 8-byte headers, uint8 data."""
  images_file, labels_file = MNIST_FILES[split]
  with gzip.open(mnist_dir / images_file) as f:
    raw_images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
  with gzip.open(mnist_dir / labels_file) as f:
    raw_labels = np.frombuffer(f.read(), np.uint8, offset=8)
  return raw_images, raw_labels


@pytest.fixture(scope="module")
def mnist_arrays(mnist_dir, data_dir):
  return {split: data.load_arrays("mnist", split, data_dir=data_dir, manual_dir=mnist_dir) for split in MNIST_FILES}


@pytest.mark.parametrize("split,num_images", [("train", 60000), ("test", 10000)])
def test_mnist_splits_match_idx_files_and_published_statistics(mnist_dir, data_dir, mnist_arrays, split, num_images):
  images, labels = mnist_arrays[split]
  assert images.shape == (num_images, 28, 28, 1) and images.dtype == np.uint8
  assert labels.shape == (num_images,) and labels.dtype == np.int32
  assert np.bincount(labels, minlength=10).tolist() == MNIST_COUNTS[split]
  pixels = images.astype(np.float64) / 255.0
  np.testing.assert_allclose((pixels.mean(), pixels.std()), MNIST_MEAN_STD[split], atol=6e-5)
  assert _row_hashes(images, labels) == _row_hashes(*_raw_idx(mnist_dir, split))
  builder = data.get_builder("mnist", data_dir=data_dir, manual_dir=mnist_dir)
  assert set(builder.info.splits.keys()) == {"train", "test"}
  assert builder.info.splits[split].num_examples == num_images
  assert builder.name == "metric_jax_mnist"  # does not clash with tfds' own `mnist`


def test_mnist_limited_data_draws_from_official_train_and_tests_on_official_test(mnist_dir, data_dir, mnist_arrays):
  train, test = data.limited_data_split("mnist", 60, seed=0, data_dir=data_dir, manual_dir=mnist_dir)
  assert train.images.shape == (600, 28, 28, 1) and train.num_classes == test.num_classes == 10
  assert np.bincount(train.labels).tolist() == [60] * 10
  # The test set is the whole official 10k test set, labels unchanged (digits 0..9 remap to themselves).
  assert _row_hashes(test.images, test.labels) == _row_hashes(*mnist_arrays["test"])
  # Every training image (with its label) is a row of the official 60k training set.
  official_train = _row_hashes(*mnist_arrays["train"])
  assert all(official_train[k] >= n for k, n in _row_hashes(train.images, train.labels).items())
  other, test_other = data.limited_data_split("mnist", 60, seed=1, data_dir=data_dir, manual_dir=mnist_dir)
  assert not np.array_equal(other.images, train.images)
  np.testing.assert_array_equal(test_other.labels, test.labels)  # the test set does not depend on the draw's seed
  big, _ = data.limited_data_split("mnist", 5000, seed=0, data_dir=data_dir, manual_dir=mnist_dir)
  assert np.bincount(big.labels).tolist() == [5000] * 10  # more per class than the whole test set holds of any digit


def test_mnist_limited_data_splits_hold_out_a_fixed_validation_part_of_the_official_train(mnist_dir, data_dir,
                                                                                          mnist_arrays):
  train, validation, test = data.limited_data_splits("mnist", 0, 500, seed=0, data_dir=data_dir, manual_dir=mnist_dir)
  assert (len(train.labels), len(validation.labels), len(test.labels)) == (55000, 5000, 10000)
  assert np.bincount(validation.labels).tolist() == [500] * 10
  assert train.num_classes == validation.num_classes == test.num_classes == 10
  # Train and validation together are exactly the official training images (a partition, duplicates counted).
  assert _row_hashes(train.images, train.labels) + _row_hashes(validation.images, validation.labels) == \
      _row_hashes(*mnist_arrays["train"])
  assert _row_hashes(test.images, test.labels) == _row_hashes(*mnist_arrays["test"])
  drawn, validation_1, _ = data.limited_data_splits("mnist", 60, 500, seed=1, data_dir=data_dir, manual_dir=mnist_dir)
  np.testing.assert_array_equal(validation_1.images, validation.images)  # the same validation images for every draw
  assert np.bincount(drawn.labels).tolist() == [60] * 10
  train_rows = _row_hashes(*mnist_arrays["train"])
  together = _row_hashes(drawn.images, drawn.labels) + _row_hashes(validation.images, validation.labels)
  assert all(train_rows[k] >= n for k, n in together.items())  # the draw never takes a validation image
  for bad in (0, -1, 2.5):
    with pytest.raises(ValueError, match="validation_per_class"):
      data.limited_data_splits("mnist", 60, bad, seed=0, data_dir=data_dir, manual_dir=mnist_dir)


@pytest.fixture(scope="module")
def mnist_test_only_dir(mnist_dir, tmp_path_factory):
  """A copy of the MNIST folder WITHOUT the training files: the one-split (halves) fallback of the limited protocol."""
  copy = tmp_path_factory.mktemp("mnist_test_only")
  for name in MNIST_FILES["test"]:
    shutil.copy2(mnist_dir / name, copy / name)
  return copy


def test_mnist_without_train_files_prepares_test_and_names_the_missing_file(mnist_test_only_dir, tmp_path):
  builder = data.get_builder("mnist", data_dir=tmp_path, manual_dir=mnist_test_only_dir)
  assert set(builder.info.splits.keys()) == {"test"}
  pattern = r"train-images-idx3-ubyte\.gz.*" + str(mnist_test_only_dir).replace("/", ".")
  with pytest.raises(FileNotFoundError, match=pattern):
    data.load_arrays("mnist", "train", data_dir=tmp_path, manual_dir=mnist_test_only_dir)


def test_mnist_limited_data_halves_fallback_without_train_files(mnist_test_only_dir, mnist_arrays, tmp_path):
  train, test = data.limited_data_split("mnist", 60, seed=0, data_dir=tmp_path, manual_dir=mnist_test_only_dir)
  assert train.images.shape == (600, 28, 28, 1) and test.images.shape == (5000, 28, 28, 1)
  assert np.bincount(train.labels).tolist() == [60] * 10
  full_images, full_labels = mnist_arrays["test"]
  # Stratified halves: each class's test count is within one of half its count in the 10k images.
  assert np.all(np.abs(np.bincount(test.labels) - np.bincount(full_labels) / 2) <= 1)
  # Pool and test are disjoint: no training image row is in the test set, and every row comes from the 10k set.
  train_rows = _row_hashes(train.images, train.labels)
  test_rows = _row_hashes(test.images, test.labels)
  full_rows = _row_hashes(full_images, full_labels)
  assert not set(train_rows) & set(test_rows)
  assert all(full_rows[k] >= n for k, n in (train_rows + test_rows).items())
  other, test_other = data.limited_data_split("mnist", 60, seed=1, data_dir=tmp_path, manual_dir=mnist_test_only_dir)
  assert not np.array_equal(other.images, train.images)
  np.testing.assert_array_equal(test_other.labels, test.labels)  # the test set does not depend on the draw's seed


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
  # small1 -> small2's alphabets small1 lacks (Japanese_(katakana), Sanskrit, Tagalog): 156 - 50 shared characters.
  assert (train.num_classes, test.num_classes) == (136, 106)
  assert train.images.shape[0] == 2720 and test.images.shape[0] == 2120
  assert set(train.labels.tolist()) == set(range(136)) and set(test.labels.tolist()) == set(range(106))
  with pytest.raises(ValueError, match="protocol"):
    data.retrieval_split("omniglot", protocol="tiny", data_dir=data_dir, manual_dir=omniglot_dir)


def test_sklearn_digits_retrieval_split(data_dir):
  from sklearn.datasets import load_digits
  target = load_digits().target
  train, test = data.retrieval_split("sklearn_digits", data_dir=data_dir)
  assert train.num_classes == test.num_classes == 5
  assert train.images.shape[0] == (target < 5).sum() and test.images.shape[0] == (target >= 5).sum()
  assert np.bincount(test.labels).tolist() == [(target == c).sum() for c in range(5, 10)]
