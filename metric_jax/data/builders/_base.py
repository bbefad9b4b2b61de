"""Shared machinery of the offline builders.

Every builder is a `tfds.core.GeneratorBasedBuilder` that reads the official raw files from a local directory (the
`manual_dir`, same file names as the official distribution) and writes `array_record` files. TensorFlow is not installed,
so the features avoid everything that needs it:

* `tfds.features.Image` needs TensorFlow to encode and decode (checked with tensorflow-datasets 4.9.10: `encode_example`
  raises `ModuleNotFoundError: No module named 'tensorflow'`). Datasets shipped as pixel arrays (digits, MNIST, CIFAR, SVHN)
  therefore store the image as a fixed-shape `tfds.features.Tensor(dtype=uint8)`; datasets shipped as image files
  (Omniglot PNGs, CUB / Cars / SOP JPEGs) store the file's bytes unchanged in a scalar `Tensor(dtype=object)` and pillow
  decodes them when the split is read (`metric_jax.data.load_arrays`). `ENCODED_IMAGES` tells the reader which.
* Labels are `ClassLabel` (stored as int64) where the class set is fixed, otherwise a scalar int64 `Tensor`.

A builder prepares the splits whose raw files are present (`available_splits`). Asking for a split whose files are missing
raises `FileNotFoundError` naming the file and the directory searched; an unreadable file (bad zip / gzip / tar, wrong IDX
magic number, unreadable .mat or pickle) raises `CorruptFileError` naming the file.

What a prepared dataset was built from is its `source_files` (each identified by `file_identity`: resolved path, size,
mtime and a SHA-256 of the first and last MiB) and its builder's code (`code_fingerprint`); `metric_jax.data.get_builder`
stores them beside the prepared files and rebuilds when they change.
"""

from __future__ import annotations

import abc
import gzip
import hashlib
import inspect
import pathlib
import tarfile
import zipfile
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds


class CorruptFileError(ValueError):
  """A raw dataset file exists but cannot be read as the format its official distribution uses."""


class MissingFileError(FileNotFoundError):
  """A raw dataset file needed for a requested split is not in the manual directory."""


class OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base class: subclasses set the class attributes below and implement `_info` and `_generate_examples(split, raw_dir)`.

  Class attributes:
    SHORT_NAME: name used by `metric_jax.data.get_builder`.
    FOLDER: sub-folder of `$METRIC_JAX_DATASETS` (or `../shared/datasets`) holding the raw files.
    SPLIT_FILES: split name -> the raw file names that split needs.
    ENCODED_IMAGES: True when `image` holds encoded file bytes (decode with pillow), False for uint8 arrays.
  """

  VERSION = tfds.core.Version("1.0.0")
  SHORT_NAME: str = ""
  FOLDER: Optional[str] = None
  SPLIT_FILES: Dict[str, Tuple[str, ...]] = {}
  ENCODED_IMAGES: bool = False
  # Set by `get_builder` before `download_and_prepare`; falls back to tfds' manual_dir.
  raw_dir: Optional[pathlib.Path] = None

  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls):
    """No download URLs, so no checksum file. (tfds' default looks for one next to the module through a code path
    that imports the `importlib_resources` backport, which tensorflow-datasets 4.9.10 uses but does not install.)"""
    return None

  @classmethod
  def available_splits(cls, raw_dir: Optional[pathlib.Path]) -> Tuple[str, ...]:
    """The splits whose raw files are all present in `raw_dir`."""
    if not cls.SPLIT_FILES:
      return ()
    if raw_dir is None:
      return ()
    raw_dir = pathlib.Path(raw_dir)
    return tuple(s for s, files in cls.SPLIT_FILES.items() if all((raw_dir / f).is_file() for f in files))

  @classmethod
  def source_files(cls, raw_dir: Optional[pathlib.Path]) -> Tuple[pathlib.Path, ...]:
    """The raw files a prepared dataset is built from: those of the available splits, each once, sorted by name."""
    names = sorted({f for split in cls.available_splits(raw_dir) for f in cls.SPLIT_FILES[split]})
    return tuple(pathlib.Path(raw_dir) / name for name in names)

  @classmethod
  def source_identity(cls, path: pathlib.Path) -> Dict[str, object]:
    """The identity of one source file recorded beside the prepared data (default: `file_identity`)."""
    return file_identity(path)

  @classmethod
  def code_fingerprint(cls) -> str:
    """SHA-256 of the source of every module of `metric_jax.data.builders` this builder's classes are defined in (its
    own module and `_base`), so that a change of the reading code rebuilds the prepared data."""
    digest = hashlib.sha256()
    files = sorted({inspect.getfile(c) for c in cls.__mro__ if c.__module__.startswith("metric_jax.data.builders")})
    for path in files:
      digest.update(pathlib.Path(path).name.encode() + b"\0" + pathlib.Path(path).read_bytes())
    return digest.hexdigest()

  @classmethod
  def missing_error(cls, split: str, raw_dir: Optional[pathlib.Path]) -> MissingFileError:
    """The error raised when `split` is requested but (some of) its raw files are absent."""
    if split not in cls.SPLIT_FILES:
      return MissingFileError(
          f"{cls.SHORT_NAME}: unknown split {split!r}; splits are {tuple(cls.SPLIT_FILES)}.")
    where = "no manual_dir was given and no default exists" if raw_dir is None else f"looked in {raw_dir}"
    missing = [f for f in cls.SPLIT_FILES[split] if raw_dir is None or not (pathlib.Path(raw_dir) / f).is_file()]
    return MissingFileError(
        f"{cls.SHORT_NAME}: split {split!r} needs the official file(s) {', '.join(missing)}, not found ({where}). "
        f"Pass manual_dir= or set $METRIC_JAX_DATASETS.")

  def _split_generators(self, dl_manager):
    raw_dir = self.raw_dir
    if raw_dir is None:
      try:
        raw_dir = pathlib.Path(dl_manager.manual_dir)
      except Exception:  # tfds raises when no manual_dir was configured.
        raw_dir = None
    splits = self.available_splits(raw_dir)
    if not splits:
      first = next(iter(self.SPLIT_FILES))
      raise self.missing_error(first, raw_dir)
    return {split: self._generate_examples(split, pathlib.Path(raw_dir)) for split in splits}

  @abc.abstractmethod
  def _generate_examples(self, split: str, raw_dir: pathlib.Path):
    """Yields `(key, example)` pairs of `split` read from the raw files in `raw_dir`."""


# ---------------------------------------------------------------------------------------------------------------------
# Raw-file readers with clear errors.


def open_zip(path: pathlib.Path) -> zipfile.ZipFile:
  try:
    return zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise CorruptFileError(f"{path} is not a readable zip archive ({e}).") from e


def open_tar(path: pathlib.Path) -> tarfile.TarFile:
  try:
    return tarfile.open(path, mode="r:*")
  except (tarfile.TarError, OSError, EOFError) as e:
    raise CorruptFileError(f"{path} is not a readable tar archive ({e}).") from e


def read_gzip(path: pathlib.Path) -> bytes:
  try:
    with gzip.open(path, "rb") as f:
      return f.read()
  except (gzip.BadGzipFile, OSError, EOFError) as e:
    raise CorruptFileError(f"{path} is not a readable gzip file ({e}).") from e


def read_idx(path: pathlib.Path, expected_ndim: int) -> np.ndarray:
  """Reads an IDX file (MNIST format, gzip-compressed): magic 0x0000 0x08 ndim, big-endian uint32 sizes, uint8 data."""
  data = read_gzip(path)
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != expected_ndim:
    magic = data[:4].hex() if len(data) >= 4 else data.hex()
    raise CorruptFileError(
        f"{path}: wrong IDX magic number 0x{magic}, expected 0x000008{expected_ndim:02x} (uint8, {expected_ndim}-D).")
  header = 4 + 4 * expected_ndim
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(expected_ndim))
  size = int(np.prod(shape))
  if len(data) != header + size:
    raise CorruptFileError(f"{path}: IDX header announces shape {shape} ({size} bytes) but the file holds "
                           f"{len(data) - header} data bytes.")
  return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


IDENTITY_HASH_BYTES = 1 << 20


def file_identity(path: pathlib.Path) -> Dict[str, object]:
  """What identifies a raw file cheaply: `{"path" (resolved), "size", "mtime_ns", "sha256_head_tail"}`.

  `sha256_head_tail` hashes the whole file when it is at most 2 MiB, else its first and last MiB (`IDENTITY_HASH_BYTES`),
  so swapping a file for another of the same size and mtime is still noticed, at the cost of reading 2 MiB.
  """
  path = pathlib.Path(path).resolve()
  stat = path.stat()
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    if stat.st_size <= 2 * IDENTITY_HASH_BYTES:
      digest.update(f.read())
    else:
      digest.update(f.read(IDENTITY_HASH_BYTES))
      f.seek(stat.st_size - IDENTITY_HASH_BYTES)
      digest.update(f.read(IDENTITY_HASH_BYTES))
  return {"path": str(path), "size": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns),
          "sha256_head_tail": digest.hexdigest()}


def extract_tar(path: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
  """Extracts a tar archive once into a sub-folder of `dest` keyed by the archive's `file_identity` (so a changed
  archive is extracted afresh); a marker file records completion. Returns that sub-folder."""
  identity = file_identity(path)
  key = hashlib.sha1("|".join(str(identity[k]) for k in sorted(identity)).encode()).hexdigest()[:12]
  dest = dest / key
  marker = dest / ".extracted"
  if marker.exists():
    return dest
  dest.mkdir(parents=True, exist_ok=True)
  archive = open_tar(path)
  try:
    with archive:
      archive.extractall(dest, filter="data")
  except (tarfile.TarError, OSError, EOFError) as e:
    raise CorruptFileError(f"{path} could not be extracted ({e}).") from e
  marker.write_text(str(path))
  return dest


def image_tensor(shape: Sequence[int]) -> tfds.features.Tensor:
  return tfds.features.Tensor(shape=tuple(shape), dtype=np.uint8)


def encoded_image() -> tfds.features.Tensor:
  return tfds.features.Tensor(shape=(), dtype=np.object_)


def check_labels_in_range(labels: Iterable[int], num_classes: int, path: pathlib.Path):
  labels = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise CorruptFileError(f"{path}: labels outside [0, {num_classes}) (min {labels.min()}, max {labels.max()}).")
