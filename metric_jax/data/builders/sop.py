"""Stanford Online Products from the official `Stanford_Online_Products.zip`, offline.

The zip holds `Stanford_Online_Products/Ebay_train.txt` and `Ebay_test.txt` (header `image_id class_id super_class_id
path`, paths such as `bicycle_final/111085122871_0.JPG`) and the images. Splits `train` (59551 images, classes 1-11318)
and `test` (60502 images, classes 11319-22634) are the official, class-disjoint retrieval split. Features: `image` (JPEG
bytes), `label` (class_id - 1), `super_label` (super_class_id - 1, 0..11).

References:
  Oh Song, H., Xiang, Y., Jegelka, S. & Savarese, S. (2016). Deep metric learning via lifted structured feature
  embedding. CVPR.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from metric_jax.data.builders import _base

ZIP = "Stanford_Online_Products.zip"
_ROOT = "Stanford_Online_Products"
_LISTS = {"train": "Ebay_train.txt", "test": "Ebay_test.txt"}


class MetricJaxSop(_base.OfflineBuilder):
  """Stanford Online Products, official class-disjoint `train` / `test` splits."""

  SHORT_NAME = "sop"
  FOLDER = "sop"
  SPLIT_FILES = {"train": (ZIP,), "test": (ZIP,)}
  ENCODED_IMAGES = True

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="Stanford Online Products (Oh Song et al. 2016), official zip; JPEG bytes decoded with pillow.",
        features=tfds.features.FeaturesDict({
            "image": _base.encoded_image(),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            "super_label": tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
    )

  def _generate_examples(self, split, raw_dir):
    path = raw_dir / ZIP
    with _base.open_zip(path) as zf:
      list_name = f"{_ROOT}/{_LISTS[split]}"
      try:
        lines = zf.read(list_name).decode().splitlines()
      except KeyError as e:
        raise _base.CorruptFileError(f"{path} has no {list_name} (not the official SOP layout).") from e
      header = lines[0].split() if lines else []
      if header != ["image_id", "class_id", "super_class_id", "path"]:
        raise _base.CorruptFileError(f"{path}: {list_name} header is {header}, expected image_id class_id "
                                     f"super_class_id path.")
      for line in lines[1:]:
        if not line.strip():
          continue
        image_id, class_id, super_id, rel = line.split()
        try:
          data = zf.read(f"{_ROOT}/{rel}")
        except KeyError as e:
          raise _base.CorruptFileError(f"{path} lacks {_ROOT}/{rel}, listed in {list_name}.") from e
        yield int(image_id), {"image": data, "label": int(class_id) - 1, "super_label": int(super_id) - 1}
