"""CUB-200-2011 from the official `CUB_200_2011.tgz`, offline.

The tarball holds `CUB_200_2011/images.txt` (`<image_id> <relative path>`), `image_class_labels.txt`
(`<image_id> <class_id 1..200>`), `train_test_split.txt` (`<image_id> <1 = train, 0 = test>`), `classes.txt` and
`images/<class folder>/<file>.jpg`. Splits `train` / `test` follow the official image split (5994 / 5794 images); the
metric-learning protocol (classes 1-100 train, 101-200 test over all 11788 images) is `metric_jax.data.retrieval_split`.
Features: `image` (JPEG bytes as shipped, pillow decodes), `label` (class_id - 1, 0..199). The tarball is extracted once
under `<data_dir>/downloads/extracted/` (seeking in a gzip stream would re-decompress it for every image).

References:
  Wah, C., Branson, S., Welinder, P., Perona, P. & Belongie, S. (2011). The Caltech-UCSD Birds-200-2011 Dataset.
  CNS-TR-2011-001.
"""

from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from metric_jax.data.builders import _base

TARBALL = "CUB_200_2011.tgz"
_ROOT = "CUB_200_2011"


def _read_table(path, columns):
  if not path.is_file():
    raise _base.CorruptFileError(f"the CUB tarball lacks {path.name} (looked for {path}).")
  rows = {}
  for line in path.read_text().splitlines():
    parts = line.split()
    if not parts:
      continue
    if len(parts) != columns:
      raise _base.CorruptFileError(f"{path}: malformed line {line!r}.")
    rows[int(parts[0])] = parts[1] if columns == 2 else parts[1:]
  return rows


class MetricJaxCub200(_base.OfflineBuilder):
  """CUB-200-2011 birds, splits `train` / `test` (official image split), 200 classes."""

  SHORT_NAME = "cub200"
  FOLDER = "cub200"
  SPLIT_FILES = {"train": (TARBALL,), "test": (TARBALL,)}
  ENCODED_IMAGES = True

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="CUB-200-2011 (Wah et al. 2011), official tarball; JPEG bytes decoded with pillow.",
        features=tfds.features.FeaturesDict({
            "image": _base.encoded_image(),
            "label": tfds.features.ClassLabel(num_classes=200),
        }),
        supervised_keys=("image", "label"),
    )

  def _generate_examples(self, split, raw_dir):
    root = _base.extract_tar(raw_dir / TARBALL, pathlib.Path(self.data_dir).parent.parent / "downloads" / "extracted"
                             / "cub200") / _ROOT
    paths = _read_table(root / "images.txt", 2)
    classes = _read_table(root / "image_class_labels.txt", 2)
    is_train = _read_table(root / "train_test_split.txt", 2)
    want = "1" if split == "train" else "0"
    for image_id in sorted(paths):
      if is_train.get(image_id) != want:
        continue
      label = int(classes[image_id]) - 1
      if not 0 <= label < 200:
        raise _base.CorruptFileError(f"{raw_dir / TARBALL}: image {image_id} has class {label + 1}, outside 1..200.")
      image_path = root / "images" / paths[image_id]
      if not image_path.is_file():
        raise _base.CorruptFileError(f"{raw_dir / TARBALL}: images.txt lists {paths[image_id]}, absent from images/.")
      yield image_id, {"image": image_path.read_bytes(), "label": label}
