"""Omniglot from the official zips of the authors' repository (brendenlake/omniglot), offline.

Splits, named after the zips (`manual_dir` holds any subset of them; the splits whose zips are present are prepared):

| split        | zip                              | alphabets | characters | images |
|--------------|----------------------------------|-----------|------------|--------|
| `background` | `images_background.zip`          | 30        | 964        | 19280  |
| `evaluation` | `images_evaluation.zip`          | 20        | 659        | 13180  |
| `small1`     | `images_background_small1.zip`   | 5         | 136        | 2720   |
| `small2`     | `images_background_small2.zip`   | 5         | 156        | 3120   |

Each zip holds `<zip stem>/<alphabet>/<characterNN>/<id>_<drawer>.png` (105x105, 1-bit). Features: `image` (the PNG bytes
as shipped; pillow decodes them to uint8 `[105, 105, 1]`, 0 = stroke, 255 = background), `label` (int64, the index of
(alphabet, character) in sorted order *within the split*, so 0..C-1), `alphabet` and `character` (text).

References:
  Lake, B. M., Salakhutdinov, R. & Tenenbaum, J. B. (2015). Human-level concept learning through probabilistic program
  induction. Science 350(6266).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from metric_jax.data.builders import _base

ZIPS = {
    "background": "images_background.zip",
    "evaluation": "images_evaluation.zip",
    "small1": "images_background_small1.zip",
    "small2": "images_background_small2.zip",
}


def list_characters(zf, zip_path):
  """Sorted [(alphabet, character, [png member names sorted])] of one Omniglot zip."""
  stem = zip_path.name[:-len(".zip")]
  groups = {}
  for name in zf.namelist():
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != stem or not parts[3].endswith(".png"):
      continue
    groups.setdefault((parts[1], parts[2]), []).append(name)
  if not groups:
    raise _base.CorruptFileError(f"{zip_path} holds no '{stem}/<alphabet>/<character>/*.png' images.")
  return [(a, c, sorted(groups[(a, c)])) for a, c in sorted(groups)]


class MetricJaxOmniglot(_base.OfflineBuilder):
  """Omniglot characters; splits background / evaluation / small1 / small2 after the official zips."""

  SHORT_NAME = "omniglot"
  FOLDER = "omniglot"
  SPLIT_FILES = {split: (zip_name,) for split, zip_name in ZIPS.items()}
  ENCODED_IMAGES = True

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="Omniglot (Lake et al. 2015) from the official zips; PNG bytes, decoded with pillow.",
        features=tfds.features.FeaturesDict({
            "image": _base.encoded_image(),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            "alphabet": tfds.features.Text(),
            "character": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
    )

  def _generate_examples(self, split, raw_dir):
    path = raw_dir / ZIPS[split]
    zf = _base.open_zip(path)
    with zf:
      for label, (alphabet, character, members) in enumerate(list_characters(zf, path)):
        for name in members:
          try:
            data = zf.read(name)
          except Exception as e:  # zlib / CRC errors of a damaged archive.
            raise _base.CorruptFileError(f"{path}: cannot read member {name} ({e}).") from e
          if not data.startswith(b"\x89PNG"):
            raise _base.CorruptFileError(f"{path}: member {name} is not a PNG image.")
          yield name, {"image": data, "label": label, "alphabet": alphabet, "character": character}
