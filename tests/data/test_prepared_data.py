"""Prepared datasets are keyed on the raw files they were built from: never stale, rebuilt only when something changed.

Small synthetic archives in the official layouts (MNIST IDX files, Omniglot zips), as in test_builders_synthetic.py.
"""

import concurrent.futures
import gzip
import io
import json
import logging
import os
import pathlib
import shutil
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from metric_jax import data
from metric_jax.data import _registry
from metric_jax.data.builders import _base

RECORD = _registry.SOURCE_RECORD_FILE
LOGGER = "metric_jax.data._registry"


def _idx_gz(path, array):
  """An IDX file, gzip level 0 (stored blocks) with a fixed header time, so its size depends only on the array's."""
  header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=0, mtime=0) as f:
    f.write(header + array.astype(np.uint8).tobytes())


def _mnist_test_files(folder: pathlib.Path, seed: int, n: int = 12):
  """Writes the two MNIST test-split files into `folder`; returns (images [n, 28, 28, 1], labels [n])."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
  y = rng.integers(0, 10, size=n).astype(np.uint8)
  _idx_gz(folder / "t10k-images-idx3-ubyte.gz", x)
  _idx_gz(folder / "t10k-labels-idx1-ubyte.gz", y)
  return x[..., None], y.astype(np.int32)


def _sorted_rows(images, labels):
  return sorted((int(l), im.tobytes()) for im, l in zip(images, labels))


def _omniglot_small1(path: pathlib.Path, size: int, num_chars: int = 2, drawers: int = 2):
  """An `images_background_small1.zip` with `size` x `size` 1-bit PNGs."""
  with zipfile.ZipFile(path, "w") as zf:
    for c in range(1, num_chars + 1):
      for d in range(1, drawers + 1):
        img = np.random.default_rng(10 * c + d).random((size, size)) > 0.5
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        zf.writestr(f"images_background_small1/Alpha/character{c:02d}/{c:04d}_{d:02d}.png", buf.getvalue())


class _PrepareCounter:
  """Counts `download_and_prepare` calls of the offline builders (thread-safe)."""

  def __init__(self, monkeypatch):
    self.count = 0
    self._lock = threading.Lock()
    original = _base.OfflineBuilder.download_and_prepare

    def counting(builder, *args, **kwargs):
      with self._lock:
        self.count += 1
      return original(builder, *args, **kwargs)

    monkeypatch.setattr(_base.OfflineBuilder, "download_and_prepare", counting)


@pytest.fixture
def prepares(monkeypatch):
  return _PrepareCounter(monkeypatch)


def _prepared_dir(tfds_dir, name="metric_jax_mnist"):
  (version,) = [p for p in (tfds_dir / name).iterdir() if p.is_dir() and not p.name.startswith("incomplete")]
  return version


def test_same_raw_files_reuse_the_prepared_data(tmp_path, prepares):
  raw, tfds_dir = tmp_path / "raw", tmp_path / "tfds"
  x, y = _mnist_test_files(raw, seed=0)
  images, labels = data.load_arrays("mnist", "test", data_dir=tfds_dir, manual_dir=raw)
  assert _sorted_rows(images, labels) == _sorted_rows(x, y)
  assert prepares.count == 1
  prepared = _prepared_dir(tfds_dir)
  stamps = {p.name: p.stat().st_mtime_ns for p in prepared.iterdir()}
  assert RECORD in stamps
  record = json.loads((prepared / RECORD).read_text())
  assert set(record["files"]) == {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
  assert record["files"]["t10k-images-idx3-ubyte.gz"]["path"] == str((raw / "t10k-images-idx3-ubyte.gz").resolve())
  assert record["splits"] == ["test"]
  builder = data.get_builder("mnist", data_dir=tfds_dir, manual_dir=raw)
  again, _ = data.load_arrays("mnist", "test", data_dir=tfds_dir, manual_dir=raw)
  assert prepares.count == 1  # no rebuild: no prepare call, and not one file of the prepared dataset rewritten
  assert {p.name: p.stat().st_mtime_ns for p in prepared.iterdir()} == stamps
  assert set(builder.info.splits.keys()) == {"test"}
  np.testing.assert_array_equal(again, images)


def test_other_raw_files_rebuild_and_say_which_file_changed(tmp_path, prepares, caplog):
  tfds_dir = tmp_path / "tfds"
  xa, ya = _mnist_test_files(tmp_path / "a", seed=0)
  xb, yb = _mnist_test_files(tmp_path / "b", seed=1)
  images, labels = data.load_arrays("mnist", "test", data_dir=tfds_dir, manual_dir=tmp_path / "a")
  assert _sorted_rows(images, labels) == _sorted_rows(xa, ya)
  with caplog.at_level(logging.WARNING, logger=LOGGER):
    images, labels = data.load_arrays("mnist", "test", data_dir=tfds_dir, manual_dir=tmp_path / "b")
  assert _sorted_rows(images, labels) == _sorted_rows(xb, yb)
  assert prepares.count == 2
  assert "rebuilding" in caplog.text
  assert str((tmp_path / "b" / "t10k-images-idx3-ubyte.gz").resolve()) in caplog.text
  caplog.clear()
  builder = data.get_builder("mnist", data_dir=tfds_dir, manual_dir=tmp_path / "a")  # and back
  assert prepares.count == 3
  assert str((tmp_path / "a" / "t10k-labels-idx1-ubyte.gz").resolve()) in caplog.text
  records = _registry.read_split(builder, "test")
  assert _sorted_rows([np.asarray(r["image"]) for r in records], [r["label"] for r in records]) == _sorted_rows(xa, ya)


def test_file_replaced_in_place_with_same_size_and_mtime_is_noticed_by_its_content(tmp_path, prepares, caplog):
  raw, tfds_dir = tmp_path / "raw", tmp_path / "tfds"
  _mnist_test_files(raw, seed=0)
  data.get_builder("mnist", data_dir=tfds_dir, manual_dir=raw)
  target = raw / "t10k-images-idx3-ubyte.gz"
  before = target.stat()
  x_new = np.random.default_rng(5).integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
  _idx_gz(target, x_new)
  os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
  assert (target.stat().st_size, target.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
  with caplog.at_level(logging.WARNING, logger=LOGGER):
    images, _ = data.load_arrays("mnist", "test", data_dir=tfds_dir, manual_dir=raw)
  assert prepares.count == 2
  assert f"{target.resolve()} changed (content)" in caplog.text
  assert sorted(im.tobytes() for im in images) == sorted(im[..., None].tobytes() for im in x_new)


def test_resized_omniglot_copies_are_not_served_as_the_old_105_pixel_images(tmp_path, caplog):
  """The reported case: `manual_dir` pointed at resized copies of the zips returned the old 105 x 105 arrays."""
  tfds_dir = tmp_path / "tfds"
  (tmp_path / "orig").mkdir()
  (tmp_path / "resized").mkdir()
  _omniglot_small1(tmp_path / "orig" / "images_background_small1.zip", 105)
  _omniglot_small1(tmp_path / "resized" / "images_background_small1.zip", 28)
  images, _ = data.load_arrays("omniglot", "small1", data_dir=tfds_dir, manual_dir=tmp_path / "orig")
  assert images.shape == (4, 105, 105, 1)
  with caplog.at_level(logging.WARNING, logger=LOGGER):
    images, _ = data.load_arrays("omniglot", "small1", data_dir=tfds_dir, manual_dir=tmp_path / "resized")
  assert images.shape == (4, 28, 28, 1)
  assert "images_background_small1.zip is now read from" in caplog.text
  # The same in place: the zip in the original folder overwritten by its resized copy.
  shutil.copyfile(tmp_path / "resized" / "images_background_small1.zip", tmp_path / "orig" / "images_background_small1.zip")
  images, _ = data.load_arrays("omniglot", "small1", data_dir=tfds_dir, manual_dir=tmp_path / "orig")
  assert images.shape == (4, 28, 28, 1)


def test_missing_record_or_changed_builder_code_rebuilds(tmp_path, prepares, monkeypatch, caplog):
  raw, tfds_dir = tmp_path / "raw", tmp_path / "tfds"
  _mnist_test_files(raw, seed=0)
  data.get_builder("mnist", data_dir=tfds_dir, manual_dir=raw)
  (_prepared_dir(tfds_dir) / RECORD).unlink()  # as left by an older metric_jax, or a build killed before the record
  with caplog.at_level(logging.WARNING, logger=LOGGER):
    data.get_builder("mnist", data_dir=tfds_dir, manual_dir=raw)
  assert prepares.count == 2 and f"no readable {RECORD}" in caplog.text
  assert (_prepared_dir(tfds_dir) / RECORD).is_file()
  caplog.clear()
  monkeypatch.setattr(data.BUILDERS["mnist"], "code_fingerprint", classmethod(lambda cls: "edited"))
  with caplog.at_level(logging.WARNING, logger=LOGGER):
    data.get_builder("mnist", data_dir=tfds_dir, manual_dir=raw)
  assert prepares.count == 3 and "the builder's code changed" in caplog.text


def test_a_new_split_file_is_named_and_added(tmp_path, prepares, caplog):
  raw, tfds_dir = tmp_path / "raw", tmp_path / "tfds"
  _mnist_test_files(raw, seed=0)
  data.get_builder("mnist", data_dir=tfds_dir, manual_dir=raw)
  rng = np.random.default_rng(3)
  _idx_gz(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8))
  _idx_gz(raw / "train-labels-idx1-ubyte.gz", np.arange(5, dtype=np.uint8))
  with caplog.at_level(logging.WARNING, logger=LOGGER):
    builder = data.get_builder("mnist", data_dir=tfds_dir, manual_dir=raw)
  assert set(builder.info.splits.keys()) == {"train", "test"}
  assert f"{(raw / 'train-images-idx3-ubyte.gz').resolve()} is new" in caplog.text
  assert "splits ['test'] -> ['test', 'train']" in caplog.text


def test_file_identity_hashes_head_and_tail_of_large_files(tmp_path):
  big = tmp_path / "big.bin"
  size = 3 * _base.IDENTITY_HASH_BYTES
  payload = bytearray(np.random.default_rng(0).integers(0, 256, size=size, dtype=np.uint8).tobytes())
  big.write_bytes(payload)
  first = _base.file_identity(big)
  assert first["size"] == size and first["path"] == str(big.resolve())
  for offset in (0, size - 1):  # a byte of the first or the last MiB changes the hash
    changed = bytearray(payload)
    changed[offset] ^= 0xFF
    big.write_bytes(changed)
    assert _base.file_identity(big)["sha256_head_tail"] != first["sha256_head_tail"]
  changed = bytearray(payload)
  changed[size // 2] ^= 0xFF  # the middle MiB is not read (by design: 2 MiB read per file)
  big.write_bytes(changed)
  assert _base.file_identity(big)["sha256_head_tail"] == first["sha256_head_tail"]


def test_concurrent_callers_build_once_and_each_gets_the_data_of_its_own_files(tmp_path, prepares):
  """Threads open the lock file separately, so `flock` serialises them as it does processes."""
  tfds_dir = tmp_path / "tfds"
  expected = {name: _sorted_rows(*_mnist_test_files(tmp_path / name, seed=seed)) for name, seed in (("a", 0), ("b", 1))}

  def load(name):
    return name, _sorted_rows(*data.load_arrays("mnist", "test", data_dir=tfds_dir, manual_dir=tmp_path / name))

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = list(pool.map(load, ["a"] * 4))
  assert prepares.count == 1 and all(rows == expected["a"] for _, rows in results)
  with concurrent.futures.ThreadPoolExecutor(4) as pool:  # callers with different raw files at the same time
    results = list(pool.map(load, ["a", "b", "a", "b", "b", "a"]))
  assert all(rows == expected[name] for name, rows in results)


def test_bundled_digits_are_keyed_on_content_not_on_the_environment_they_are_installed_in(tmp_path, prepares,
                                                                                          monkeypatch):
  cls = data.BUILDERS["sklearn_digits"]
  (bundled,) = cls.source_files(None)
  assert bundled.name == "digits.csv.gz" and bundled.is_file()
  tfds_dir = tmp_path / "tfds"
  data.get_builder("sklearn_digits", data_dir=tfds_dir)
  record = json.loads((_prepared_dir(tfds_dir, "metric_jax_sklearn_digits") / RECORD).read_text())
  assert set(record["files"]["digits.csv.gz"]) == {"path", "size", "sha256_head_tail"}
  other_env = tmp_path / "other_venv" / "digits.csv.gz"  # the same file in another environment: new path and mtime
  other_env.parent.mkdir()
  shutil.copyfile(bundled, other_env)
  monkeypatch.setattr(cls, "source_files", classmethod(lambda c, raw_dir: (other_env,)))
  data.get_builder("sklearn_digits", data_dir=tfds_dir)
  assert prepares.count == 1
  other_env.write_bytes(other_env.read_bytes() + b"\n")  # another scikit-learn's digits: rebuilt
  data.get_builder("sklearn_digits", data_dir=tfds_dir)
  assert prepares.count == 2
