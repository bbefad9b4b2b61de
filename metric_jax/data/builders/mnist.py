"""MNIST and Fashion-MNIST from the official IDX files (gzip), offline.

Files (official names, in `manual_dir`): `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz` (split `train`,
60000 images) and `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz` (split `test`, 10000 images). Fashion-MNIST
ships under the same four names. Images are stored as uint8 `[28, 28, 1]`, labels as `ClassLabel(10)`. A split is prepared
when both of its files are present (the shared datasets hold all four MNIST files); a request for a split whose files are
absent names them.

References:
  LeCun, Y., Bottou, L., Bengio, Y. & Haffner, P. (1998). Gradient-based learning applied to document recognition.
  Xiao, H., Rasul, K. & Vollgraf, R. (2017). Fashion-MNIST: a novel image dataset for benchmarking machine learning
  algorithms. arXiv:1708.07747.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from metric_jax.data.builders import _base

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

FASHION_CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                       "Ankle boot")


def read_idx_split(raw_dir, split):
  """(images uint8 [N, 28, 28, 1], labels uint8 [N]) of one split, with shape and count checks."""
  images_file, labels_file = _FILES[split]
  images = _base.read_idx(raw_dir / images_file, 3)
  labels = _base.read_idx(raw_dir / labels_file, 1)
  if images.shape[0] != labels.shape[0]:
    raise _base.CorruptFileError(
        f"{raw_dir / images_file} holds {images.shape[0]} images but {raw_dir / labels_file} holds {labels.shape[0]} labels.")
  if images.shape[1:] != (28, 28):
    raise _base.CorruptFileError(f"{raw_dir / images_file}: images are {images.shape[1:]}, expected (28, 28).")
  _base.check_labels_in_range(labels, 10, raw_dir / labels_file)
  return images[..., None], labels


class _IdxBuilder(_base.OfflineBuilder, skip_registration=True):
  SPLIT_FILES = _FILES
  CLASS_NAMES = None
  DESCRIPTION = ""

  def _info(self):
    label = (tfds.features.ClassLabel(names=list(self.CLASS_NAMES)) if self.CLASS_NAMES
             else tfds.features.ClassLabel(num_classes=10))
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({"image": _base.image_tensor((28, 28, 1)), "label": label}),
        supervised_keys=("image", "label"),
    )

  def _generate_examples(self, split, raw_dir):
    images, labels = read_idx_split(raw_dir, split)
    for i in range(len(labels)):
      yield i, {"image": images[i], "label": int(labels[i])}


class MetricJaxMnist(_IdxBuilder):
  """MNIST handwritten digits from the official IDX files."""
  SHORT_NAME = "mnist"
  FOLDER = "mnist"
  DESCRIPTION = "MNIST handwritten digits (LeCun et al. 1998), official IDX files."


class MetricJaxFashionMnist(_IdxBuilder):
  """Fashion-MNIST from the official IDX files."""
  SHORT_NAME = "fashion_mnist"
  FOLDER = "fashion_mnist"
  CLASS_NAMES = FASHION_CLASS_NAMES
  DESCRIPTION = "Fashion-MNIST (Xiao et al. 2017), official IDX files."
