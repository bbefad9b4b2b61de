"""CIFAR-10 from the official python tarball `cifar-10-python.tar.gz`, offline.

The tarball holds `cifar-10-batches-py/data_batch_1` .. `data_batch_5` (split `train`, 50000 images) and `test_batch`
(split `test`, 10000 images): pickles of dicts with `b"data"` (uint8 `[10000, 3072]`, channel-major 3x32x32) and
`b"labels"`, plus `batches.meta` with `b"label_names"`. Images are stored as uint8 `[32, 32, 3]`.

References:
  Krizhevsky, A. (2009). Learning multiple layers of features from tiny images. Technical report, University of Toronto.
"""

from __future__ import annotations

import pickle

import numpy as np
import tensorflow_datasets as tfds

from metric_jax.data.builders import _base

TARBALL = "cifar-10-python.tar.gz"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_MEMBERS = {
    "train": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
    "test": ("cifar-10-batches-py/test_batch",),
}


def read_cifar_split(path, split):
  """(images uint8 [N, 32, 32, 3], labels int64 [N]) of `split` from the tarball at `path`."""
  images, labels = [], []
  with _base.open_tar(path) as tar:
    for member in _MEMBERS[split]:
      try:
        f = tar.extractfile(member)
      except KeyError as e:
        raise _base.CorruptFileError(f"{path} has no member {member} (not the official CIFAR-10 python layout).") from e
      except Exception as e:
        raise _base.CorruptFileError(f"{path}: cannot read {member} ({e}).") from e
      try:
        batch = pickle.load(f, encoding="bytes")
        x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        y = np.asarray(batch[b"labels"], dtype=np.int64)
      except Exception as e:
        raise _base.CorruptFileError(f"{path}: {member} is not a CIFAR-10 batch pickle ({e}).") from e
      if x.shape[0] != y.shape[0]:
        raise _base.CorruptFileError(f"{path}: {member} holds {x.shape[0]} images but {y.shape[0]} labels.")
      images.append(x)
      labels.append(y)
  labels = np.concatenate(labels)
  _base.check_labels_in_range(labels, 10, path)
  return np.concatenate(images), labels


class MetricJaxCifar10(_base.OfflineBuilder):
  """CIFAR-10, splits `train` (50000) and `test` (10000), from the official python tarball."""

  SHORT_NAME = "cifar10"
  FOLDER = "cifar10"
  SPLIT_FILES = {"train": (TARBALL,), "test": (TARBALL,)}

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="CIFAR-10 (Krizhevsky 2009), official python pickles.",
        features=tfds.features.FeaturesDict({
            "image": _base.image_tensor((32, 32, 3)),
            "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
        }),
        supervised_keys=("image", "label"),
    )

  def _generate_examples(self, split, raw_dir):
    images, labels = read_cifar_split(raw_dir / TARBALL, split)
    for i in range(labels.shape[0]):
      yield i, {"image": images[i], "label": int(labels[i])}
