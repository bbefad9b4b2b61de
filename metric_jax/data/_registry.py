"""`get_builder` (prepare a dataset offline) and `load_arrays` (read a split into numpy through `tfds.data_source`)."""

from __future__ import annotations

import contextlib
import fcntl
import io
import pathlib
import shutil
from typing import Optional, Tuple

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from metric_jax.data import _paths
from metric_jax.data.builders import BUILDERS, OfflineBuilder


def _builder_class(name: str):
  if name not in BUILDERS:
    raise ValueError(f"`name` must be one of {tuple(sorted(BUILDERS))}, got {name!r}.")
  return BUILDERS[name]


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
  """Exclusive lock so that two processes (pytest-xdist workers, two hosts' launchers) never build one dataset at once."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def resolve_dirs(name: str, data_dir=None, manual_dir=None) -> Tuple[pathlib.Path, Optional[pathlib.Path]]:
  """The (data_dir, manual_dir) a call with these arguments uses, defaults filled in."""
  cls = _builder_class(name)
  data_dir = pathlib.Path(data_dir) if data_dir is not None else _paths.default_data_dir()
  if manual_dir is not None:
    manual_dir = pathlib.Path(manual_dir)
  elif cls.FOLDER is not None:
    manual_dir = _paths.default_manual_dir(cls.FOLDER)
  return data_dir, manual_dir


def get_builder(name: str, *, data_dir=None, manual_dir=None) -> OfflineBuilder:
  """Returns the prepared (array_record written) tfds builder of dataset `name`, building it offline if needed.

  Args:
    name: `sklearn_digits`, `mnist`, `fashion_mnist`, `omniglot`, `cifar10`, `svhn`, `cub200`, `cars196` or `sop`.
    data_dir: where prepared datasets live; default `$METRIC_JAX_DATA_DIR` or `~/.cache/metric_jax/tfds`.
    manual_dir: directory holding the official raw files; default `$METRIC_JAX_DATASETS/<folder>`, else
      `../shared/datasets/<folder>` next to the repository when it exists.

  Returns:
    A `tfds.core.GeneratorBasedBuilder` whose `info.splits` are the splits whose raw files were found. When more raw files
    appear later (another split's zip), the dataset is rebuilt with the larger set of splits.

  Raises:
    ValueError: unknown `name`.
    MissingFileError: none of the dataset's raw files is present (the message names them and the directory searched).
    CorruptFileError: a raw file is present but unreadable.
  """
  cls = _builder_class(name)
  data_dir, manual_dir = resolve_dirs(name, data_dir, manual_dir)
  wanted = set(cls.available_splits(manual_dir))
  if not wanted:
    raise cls.missing_error(next(iter(cls.SPLIT_FILES)), manual_dir)
  with _file_lock(data_dir / f".{cls.name}.lock"):
    builder = cls(data_dir=str(data_dir), file_format="array_record")
    builder.raw_dir = manual_dir
    if builder.is_prepared() and set(builder.info.splits.keys()) != wanted:
      shutil.rmtree(builder.data_dir)
      builder = cls(data_dir=str(data_dir), file_format="array_record")
      builder.raw_dir = manual_dir
    if not builder.is_prepared():
      config = tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir else None)
      builder.download_and_prepare(download_config=config, file_format="array_record")
  return builder


def decode_image(data: bytes, image_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
  """Decodes PNG / JPEG bytes with pillow into uint8 `[H, W, C]` (C = 1 for grayscale and 1-bit, else 3)."""
  with Image.open(io.BytesIO(data)) as img:
    img = img.convert("L") if img.mode in ("1", "L", "LA", "I", "I;16") else img.convert("RGB")
    if image_size is not None:
      img = img.resize((int(image_size[1]), int(image_size[0])), Image.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
  return array[..., None] if array.ndim == 2 else array


def read_split(builder: OfflineBuilder, split: str, *, features=("image", "label")):
  """All records of `split` as a list of dicts, read through `tfds.data_source` (array_record, random access)."""
  source = builder.as_data_source(split=split)
  records = source.__getitems__(range(len(source)))
  return [{k: r[k] for k in features} for r in records]


def load_arrays(name: str, split: str, *, data_dir=None, manual_dir=None,
                image_size: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Reads one split into memory: `(images uint8 [N, H, W, C], labels int32 [N])`.

  Records are read through `tfds.data_source` (array_record, random access); image files (Omniglot, CUB, Cars, SOP) are
  decoded with pillow.

  Args:
    name: dataset short name (see `get_builder`).
    split: a split of that dataset, e.g. `train`, `test`, `small1`.
    data_dir, manual_dir: as in `get_builder`.
    image_size: optional `(H, W)`; decoded images are resized to it (bilinear). Required for datasets whose images have
      different sizes (CUB, Cars, SOP), since the result is one stacked array.

  Raises:
    MissingFileError: `split` cannot be built because its raw file is missing (names the file and where it looked).
  """
  cls = _builder_class(name)
  _, resolved_manual = resolve_dirs(name, data_dir, manual_dir)
  if split not in cls.available_splits(resolved_manual) and split not in (cls.available_splits(None) or ()):
    raise cls.missing_error(split, resolved_manual)
  builder = get_builder(name, data_dir=data_dir, manual_dir=manual_dir)
  records = read_split(builder, split)
  labels = np.asarray([r["label"] for r in records], dtype=np.int32)
  if cls.ENCODED_IMAGES:
    images = [decode_image(r["image"], image_size) for r in records]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
      raise ValueError(f"{name}/{split}: images have {len(shapes)} different shapes (e.g. {sorted(shapes)[:3]}); "
                       f"pass `image_size=(H, W)` to resize them to one size.")
    images = np.stack(images) if images else np.zeros((0, 1, 1, 1), np.uint8)
  else:
    images = np.stack([np.asarray(r["image"], dtype=np.uint8) for r in records])
    if image_size is not None and tuple(images.shape[1:3]) != tuple(image_size):
      from metric_jax.data.preprocessing import resize_uint8
      images = resize_uint8(images, image_size)
  return images, labels
