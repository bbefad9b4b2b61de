"""SVHN cropped digits (format 2) from the official `train_32x32.mat` / `test_32x32.mat`, offline.

Each .mat holds `X` (uint8 `[32, 32, 3, N]`) and `y` (`[N, 1]`, digits 1..9 and 10 for the digit 0). Labels are stored as
0..9 (10 -> 0). `extra_32x32.mat` is prepared as split `extra` when present. Images are uint8 `[32, 32, 3]`.

References:
  Netzer, Y. et al. (2011). Reading digits in natural images with unsupervised feature learning. NIPS Workshop.
"""

from __future__ import annotations

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from metric_jax.data.builders import _base

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}


def read_svhn_mat(path):
  """(images uint8 [N, 32, 32, 3], labels int64 [N] in 0..9) of one SVHN .mat file."""
  try:
    mat = scipy.io.loadmat(path)
  except Exception as e:
    raise _base.CorruptFileError(f"{path} is not a readable MATLAB file ({e}).") from e
  if "X" not in mat or "y" not in mat:
    raise _base.CorruptFileError(f"{path} lacks the `X` / `y` arrays of SVHN's cropped-digits format.")
  x = np.asarray(mat["X"])
  if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
    raise _base.CorruptFileError(f"{path}: `X` has shape {x.shape}, expected [32, 32, 3, N].")
  y = np.asarray(mat["y"]).reshape(-1).astype(np.int64)
  if y.shape[0] != x.shape[3]:
    raise _base.CorruptFileError(f"{path}: {x.shape[3]} images but {y.shape[0]} labels.")
  if y.size and (y.min() < 1 or y.max() > 10):
    raise _base.CorruptFileError(f"{path}: labels must be 1..10, got {y.min()}..{y.max()}.")
  return np.transpose(x, (3, 0, 1, 2)).astype(np.uint8), y % 10


class MetricJaxSvhn(_base.OfflineBuilder):
  """SVHN cropped digits, splits `train`, `test` (and `extra` when its file is present)."""

  SHORT_NAME = "svhn"
  FOLDER = "svhn"
  SPLIT_FILES = {split: (name,) for split, name in FILES.items()}

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="SVHN cropped digits (Netzer et al. 2011), official .mat files; label 10 stored as 0.",
        features=tfds.features.FeaturesDict({
            "image": _base.image_tensor((32, 32, 3)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
    )

  def _generate_examples(self, split, raw_dir):
    images, labels = read_svhn_mat(raw_dir / FILES[split])
    for i in range(labels.shape[0]):
      yield i, {"image": images[i], "label": int(labels[i])}
