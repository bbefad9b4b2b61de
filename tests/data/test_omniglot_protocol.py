"""The Omniglot `small` retrieval protocol on the real zips: train, validation and test share no alphabet, no character
and no image (small1 and small2 share Greek and Latin byte for byte, so testing on all of small2 would not be disjoint).

The reference is read straight from the zips (zipfile), independently of the builder.
"""

import hashlib
import zipfile

import numpy as np
import pytest

from metric_jax import data
from metric_jax.data import splits
from tests.conftest import require_dataset_file


@pytest.fixture(scope="module")
def omniglot_dir(shared_datasets):
  require_dataset_file(shared_datasets, "omniglot", "images_background_small1.zip")
  require_dataset_file(shared_datasets, "omniglot", "images_background_small2.zip")
  return shared_datasets / "omniglot"


@pytest.fixture(scope="module")
def parts(omniglot_dir, tmp_path_factory):
  return splits.omniglot_parts("small", data_dir=tmp_path_factory.mktemp("tfds"), manual_dir=omniglot_dir,
                               image_size=(28, 28))


def _zip_alphabets(path):
  with zipfile.ZipFile(path) as zf:
    return {name.split("/")[1] for name in zf.namelist() if name.endswith(".png")}


def test_small_protocol_is_alphabet_character_and_image_disjoint(parts, omniglot_dir):
  alphabets = {k: {c.split("/")[0] for c in parts[k][1]} for k in ("train", "validation", "test")}
  assert alphabets["train"] == {"Greek", "Korean", "Latin"}
  assert alphabets["validation"] == {"Balinese", "Early_Aramaic"}
  small1 = _zip_alphabets(omniglot_dir / "images_background_small1.zip")
  small2 = _zip_alphabets(omniglot_dir / "images_background_small2.zip")
  assert alphabets["test"] == small2 - small1 == {"Japanese_(katakana)", "Sanskrit", "Tagalog"}
  for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
    assert not alphabets[a] & alphabets[b]
    assert not set(parts[a][1]) & set(parts[b][1]), f"{a} and {b} share characters"
  # No test or validation image appears anywhere in small1's training part, byte for byte or as decoded pixels.
  digest = lambda blobs: {hashlib.sha256(b).hexdigest() for b in blobs}
  train_all_bytes = digest(parts["train_all"][2])
  assert not digest(parts["test"][2]) & train_all_bytes
  assert not digest(parts["validation"][2]) & digest(parts["train"][2])
  pixel_digest = lambda x: {hashlib.sha256(np.ascontiguousarray(im).tobytes()).hexdigest() for im in x}
  assert not pixel_digest(parts["test"][0]) & pixel_digest(parts["train_all"][0])


def test_small_protocol_sizes_and_inverted_strokes(parts):
  sizes = {k: (len(parts[k][0]), len(set(parts[k][1]))) for k in ("train", "validation", "test")}
  assert sizes == {"train": (1800, 90), "validation": (920, 46), "test": (2120, 106)}
  x = parts["train"][0]
  assert x.shape[1:] == (28, 28, 1) and x.dtype == np.uint8
  # Strokes are the foreground after inversion: the border (background) is 0 and most pixels are background.
  assert x[:, 0, :, 0].mean() < 2 and np.median(x) == 0 and x.max() == 255


def test_retrieval_splits_and_split_agree(parts, omniglot_dir, tmp_path_factory):
  d = tmp_path_factory.mktemp("tfds2")
  s = data.retrieval_splits("omniglot", protocol="small", data_dir=d, manual_dir=omniglot_dir, image_size=(28, 28))
  assert (s.train.num_classes, s.validation.num_classes, s.test.num_classes) == (90, 46, 106)
  train, test = data.retrieval_split("omniglot", protocol="small", data_dir=d, manual_dir=omniglot_dir,
                                     image_size=(28, 28))
  assert (train.num_classes, len(train.labels)) == (136, 2720)
  assert np.array_equal(np.sort(test.images.reshape(len(test.images), -1), axis=0),
                        np.sort(s.test.images.reshape(len(s.test.images), -1), axis=0))


def test_retrieval_splits_carves_validation_classes_from_training_classes(data_dir):
  s = data.retrieval_splits("sklearn_digits", data_dir=data_dir)
  assert (s.train.num_classes, s.validation.num_classes, s.test.num_classes) == (3, 2, 5)
  train, _ = data.retrieval_split("sklearn_digits", data_dir=data_dir)
  assert len(s.train.labels) + len(s.validation.labels) == len(train.labels)
