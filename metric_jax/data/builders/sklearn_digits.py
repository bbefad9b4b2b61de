"""scikit-learn's bundled digits (Alpaydin & Kaynak's UCI optical digits): 1797 images, 8x8, 10 classes.

The project's built-in offline default: the data ships inside scikit-learn, so no manual_dir is needed. One split,
`train`, holds all 1797 images. Pixel values 0..16 are stored rescaled to uint8 0..255 (`round(v * 255 / 16)`) so that every
dataset shares the same `[0, 255]` convention; the image is `[8, 8, 1]` uint8.

References:
  Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits. UCI Machine Learning Repository.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from metric_jax.data.builders import _base


def digits_uint8():
  """(images uint8 [1797, 8, 8, 1] in 0..255, labels int64 [1797]) from `sklearn.datasets.load_digits`."""
  from sklearn.datasets import load_digits
  digits = load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  return images, digits.target.astype(np.int64)


class MetricJaxSklearnDigits(_base.OfflineBuilder):
  """scikit-learn's bundled 8x8 digits, one `train` split of 1797 images."""

  SHORT_NAME = "sklearn_digits"
  FOLDER = None
  SPLIT_FILES = {}

  @classmethod
  def available_splits(cls, raw_dir):
    return ("train",)

  @classmethod
  def source_files(cls, raw_dir):
    """scikit-learn's bundled `datasets/data/digits.csv.gz`, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
      return ()
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    return (path,) if path.is_file() else ()

  @classmethod
  def source_identity(cls, path):
    """Size and SHA-256 only: the bundled file's path and mtime change with every environment scikit-learn is installed
    in, its content does not, so one prepared copy serves every virtual environment sharing the data_dir."""
    identity = _base.file_identity(path)
    return {"path": "sklearn/datasets/data/" + pathlib.Path(path).name, "size": identity["size"],
            "sha256_head_tail": identity["sha256_head_tail"]}

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="scikit-learn's bundled 8x8 handwritten digits, rescaled to 0..255.",
        features=tfds.features.FeaturesDict({
            "image": _base.image_tensor((8, 8, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples("train", None)}

  def _generate_examples(self, split, raw_dir):
    images, labels = digits_uint8()
    for i in range(len(labels)):
      yield i, {"image": images[i], "label": int(labels[i])}
