"""Stanford Cars (Cars196) from the official `car_ims.tgz` and `cars_annos.mat`, offline.

`car_ims.tgz` holds `car_ims/000001.jpg` ..; `cars_annos.mat` holds `annotations`, a struct array with fields
`relative_im_path` (`car_ims/000001.jpg`), `bbox_x1/y1/x2/y2`, `class` (1..196) and `test` (0/1), and `class_names`.
Splits `train` / `test` follow the `test` flag (8144 / 8041); the metric-learning protocol (classes 1-98 train, 99-196
test over all 16185 images) is `metric_jax.data.retrieval_split`. Features: `image` (JPEG bytes), `label` (class - 1),
`bbox` (int64 `[4]`: x1, y1, x2, y2).

References:
  Krause, J., Stark, M., Deng, J. & Fei-Fei, L. (2013). 3D object representations for fine-grained categorization.
  ICCV Workshops (3dRR).
"""

from __future__ import annotations

import pathlib

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from metric_jax.data.builders import _base

TARBALL = "car_ims.tgz"
ANNOTATIONS = "cars_annos.mat"


def read_annotations(path):
  """[(relative_im_path, class 1..196, test flag, bbox [4])] from cars_annos.mat."""
  try:
    mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
  except Exception as e:
    raise _base.CorruptFileError(f"{path} is not a readable MATLAB file ({e}).") from e
  if "annotations" not in mat:
    raise _base.CorruptFileError(f"{path} has no `annotations` struct array.")
  rows = []
  for a in np.atleast_1d(mat["annotations"]):
    try:
      rows.append((str(a.relative_im_path), int(a["class"] if isinstance(a, np.void) else getattr(a, "class")),
                   int(a.test), np.asarray([a.bbox_x1, a.bbox_y1, a.bbox_x2, a.bbox_y2], dtype=np.int64)))
    except AttributeError as e:
      raise _base.CorruptFileError(f"{path}: an annotation lacks a field ({e}).") from e
  return rows


class MetricJaxCars196(_base.OfflineBuilder):
  """Stanford Cars, splits `train` / `test` (official `test` flag), 196 classes."""

  SHORT_NAME = "cars196"
  FOLDER = "cars196"
  SPLIT_FILES = {"train": (TARBALL, ANNOTATIONS), "test": (TARBALL, ANNOTATIONS)}
  ENCODED_IMAGES = True

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="Stanford Cars (Krause et al. 2013), official car_ims.tgz + cars_annos.mat; JPEG bytes.",
        features=tfds.features.FeaturesDict({
            "image": _base.encoded_image(),
            "label": tfds.features.ClassLabel(num_classes=196),
            "bbox": tfds.features.Tensor(shape=(4,), dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
    )

  def _generate_examples(self, split, raw_dir):
    rows = read_annotations(raw_dir / ANNOTATIONS)
    root = _base.extract_tar(raw_dir / TARBALL, pathlib.Path(self.data_dir).parent.parent / "downloads" / "extracted"
                             / "cars196")
    want = 0 if split == "train" else 1
    for path, cls, test, bbox in rows:
      if test != want:
        continue
      if not 1 <= cls <= 196:
        raise _base.CorruptFileError(f"{raw_dir / ANNOTATIONS}: {path} has class {cls}, outside 1..196.")
      image_path = root / path
      if not image_path.is_file():
        raise _base.CorruptFileError(f"{raw_dir / TARBALL} lacks {path}, listed in {ANNOTATIONS}.")
      yield path, {"image": image_path.read_bytes(), "label": cls - 1, "bbox": bbox}
