"""`get_builder` (prepare a dataset offline) and `load_arrays` (read a split into numpy through `tfds.data_source`).

A prepared dataset is keyed on what it was built from: `source_record` (the identity of every raw file: resolved path,
size, mtime and a SHA-256 of its first and last MiB, see `OfflineBuilder.source_identity`; the available splits; the
builder's version and code) is written beside the array_record files as `metric_jax_source.json` once they are complete. `get_builder` reuses the prepared data only when the record of
the current raw files equals the stored one; otherwise it logs which file (or what) changed and rebuilds, so data built
from other files is never returned. Building, checking and (in `load_arrays`) reading happen under one exclusive file
lock per dataset and data_dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import pathlib
import shutil
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from metric_jax.data import _paths
from metric_jax.data.builders import BUILDERS, OfflineBuilder

logger = logging.getLogger(__name__)

SOURCE_RECORD_FILE = "metric_jax_source.json"
SOURCE_RECORD_FORMAT = 1
_FILE_FORMAT = "array_record"
_IDENTITY_LABELS = {"size": "size", "mtime_ns": "mtime", "sha256_head_tail": "content"}


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


def source_record(cls, manual_dir: Optional[pathlib.Path]) -> dict:
  """What a prepared dataset of builder class `cls` built from `manual_dir` now would be built from (JSON-able)."""
  return {
      "format": SOURCE_RECORD_FORMAT,
      "builder": cls.name,
      "version": str(cls.VERSION),
      "file_format": _FILE_FORMAT,
      "code_sha256": cls.code_fingerprint(),
      "splits": sorted(cls.available_splits(manual_dir)),
      "files": {p.name: cls.source_identity(p) for p in cls.source_files(manual_dir)},
  }


def read_source_record(prepared_dir) -> Optional[dict]:
  """The record stored beside a prepared dataset, or None (none written, unreadable, or another format)."""
  try:
    record = json.loads((pathlib.Path(prepared_dir) / SOURCE_RECORD_FILE).read_text())
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) and record.get("format") == SOURCE_RECORD_FORMAT else None


def _write_source_record(prepared_dir: pathlib.Path, record: dict):
  tmp = pathlib.Path(prepared_dir) / (SOURCE_RECORD_FILE + ".tmp")
  tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
  os.replace(tmp, pathlib.Path(prepared_dir) / SOURCE_RECORD_FILE)


def describe_change(old: Optional[dict], new: dict) -> str:
  """One line saying why a stored source record `old` differs from `new`, naming the files that changed."""
  if old is None:
    return (f"it has no readable {SOURCE_RECORD_FILE} (prepared by an older metric_jax or interrupted), so what it was "
            f"built from is unknown")
  reasons = []
  old_files, new_files = old.get("files", {}), new["files"]
  for name in sorted(set(old_files) | set(new_files)):
    before, now = old_files.get(name), new_files.get(name)
    if before is None:
      reasons.append(f"{now['path']} is new")
    elif now is None:
      reasons.append(f"{before['path']} is no longer used")
    elif before != now:
      if before.get("path") != now["path"]:
        reasons.append(f"{name} is now read from {now['path']} (was {before.get('path')})")
      else:
        what = [label for key, label in _IDENTITY_LABELS.items() if before.get(key) != now.get(key)]
        reasons.append(f"{now['path']} changed ({', '.join(what)})")
  if old.get("splits") != new["splits"]:
    reasons.append(f"splits {old.get('splits')} -> {new['splits']}")
  for key, label in (("builder", "builder"), ("version", "builder version"), ("file_format", "file format")):
    if old.get(key) != new[key]:
      reasons.append(f"{label} {old.get(key)} -> {new[key]}")
  if old.get("code_sha256") != new["code_sha256"]:
    reasons.append("the builder's code changed")
  return "; ".join(reasons) if reasons else "its source record differs"


def _new_builder(cls, data_dir: pathlib.Path, manual_dir: Optional[pathlib.Path]) -> OfflineBuilder:
  builder = cls(data_dir=str(data_dir), file_format=_FILE_FORMAT)
  builder.raw_dir = manual_dir
  return builder


def _prepare(cls, data_dir: pathlib.Path, manual_dir: Optional[pathlib.Path]) -> OfflineBuilder:
  """The prepared builder, (re)built unless its stored source record equals the current one. Call under the lock."""
  record = source_record(cls, manual_dir)
  builder = _new_builder(cls, data_dir, manual_dir)
  if builder.is_prepared():
    stored = read_source_record(builder.data_dir)
    if stored == record:
      return builder
    logger.warning("%s: rebuilding the prepared dataset in %s because %s.", cls.SHORT_NAME, builder.data_dir,
                   describe_change(stored, record))
    shutil.rmtree(builder.data_dir)
    builder = _new_builder(cls, data_dir, manual_dir)
  config = tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir else None)
  builder.download_and_prepare(download_config=config, file_format=_FILE_FORMAT)
  _write_source_record(pathlib.Path(builder.data_dir), record)
  return builder


def _checked_dirs(name: str, data_dir, manual_dir):
  cls = _builder_class(name)
  data_dir, manual_dir = resolve_dirs(name, data_dir, manual_dir)
  if not cls.available_splits(manual_dir):
    raise cls.missing_error(next(iter(cls.SPLIT_FILES)), manual_dir)
  return cls, data_dir, manual_dir


def get_builder(name: str, *, data_dir=None, manual_dir=None) -> OfflineBuilder:
  """Returns the prepared (array_record written) tfds builder of dataset `name`, building it offline if needed.

  The prepared data is reused only when it was built from the same raw files (resolved path, size, mtime, SHA-256 of
  the first and last MiB of each), the same splits and the same builder version and code; otherwise a warning names
  what changed and the dataset is rebuilt (see the module docstring).

  Args:
    name: `sklearn_digits`, `mnist`, `fashion_mnist`, `omniglot`, `cifar10`, `svhn`, `cub200`, `cars196` or `sop`.
    data_dir: where prepared datasets live; default `$METRIC_JAX_DATA_DIR` or `~/.cache/metric_jax/tfds`.
    manual_dir: directory holding the official raw files; default `$METRIC_JAX_DATASETS/<folder>`, else
      `../shared/datasets/<folder>` next to the repository when it exists.

  Returns:
    A `tfds.core.GeneratorBasedBuilder` whose `info.splits` are the splits whose raw files were found. When more raw files
    appear later (another split's zip), the dataset is rebuilt with the larger set of splits. Another process may rebuild
    it from other files after this returns; `load_arrays` / `load_records` read under the lock and cannot see that.

  Raises:
    ValueError: unknown `name`.
    MissingFileError: none of the dataset's raw files is present (the message names them and the directory searched).
    CorruptFileError: a raw file is present but unreadable.
  """
  cls, data_dir, manual_dir = _checked_dirs(name, data_dir, manual_dir)
  with _file_lock(data_dir / f".{cls.name}.lock"):
    return _prepare(cls, data_dir, manual_dir)


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


def load_records(name: str, split: str, *, features: Sequence[str] = ("image", "label"), data_dir=None,
                 manual_dir=None):
  """`read_split` of the prepared dataset `name`, prepared (or rebuilt) and read under the dataset's lock, so the
  records come from the raw files in `manual_dir` as they are now even while another process rebuilds it from others.

  Raises:
    MissingFileError: `split` cannot be built because its raw file is missing (names the file and where it looked).
  """
  cls, data_dir, manual_dir = _checked_dirs(name, data_dir, manual_dir)
  if split not in cls.available_splits(manual_dir):
    raise cls.missing_error(split, manual_dir)
  with _file_lock(data_dir / f".{cls.name}.lock"):
    builder = _prepare(cls, data_dir, manual_dir)
    return read_split(builder, split, features=tuple(features))


def load_arrays(name: str, split: str, *, data_dir=None, manual_dir=None,
                image_size: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Reads one split into memory: `(images uint8 [N, H, W, C], labels int32 [N])`.

  Records are read through `tfds.data_source` (array_record, random access) under the dataset's lock (`load_records`);
  image files (Omniglot, CUB, Cars, SOP) are decoded with pillow.

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
  if split not in cls.available_splits(resolved_manual):
    raise cls.missing_error(split, resolved_manual)
  records = load_records(name, split, data_dir=data_dir, manual_dir=manual_dir)
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
