"""Builders on tiny archives written here in the official layouts (same file names and internal structure), for the
datasets whose real files are not available offline: Fashion-MNIST, CIFAR-10, SVHN, CUB-200-2011, Cars196, SOP and the
full Omniglot zips. Also: missing and corrupt files give clear errors naming the file.
"""

import gzip
import io
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
import scipy.io
from PIL import Image

from metric_jax import data

RNG = np.random.default_rng(0)


def _counter(images, labels):
  return sorted((int(l), im.tobytes()) for im, l in zip(images, labels))


def _idx_gz(path, array):
  header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def _jpeg(h, w, seed):
  img = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="JPEG")
  return buf.getvalue()


def _png_gray(seed, size=105):
  img = (np.random.default_rng(seed).random((size, size)) > 0.5)
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="PNG")  # mode "1", as the Omniglot files
  return buf.getvalue()


def _decode(jpeg_bytes, size=None):
  with Image.open(io.BytesIO(jpeg_bytes)) as im:
    im = im.convert("RGB")
    if size:
      im = im.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(im, np.uint8)


def _add_bytes(tar, name, payload):
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


# --- Fashion-MNIST ---------------------------------------------------------------------------------------------------

def test_fashion_mnist_idx_files(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  sets = {}
  for prefix, n in (("train", 30), ("t10k", 12)):
    x = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = np.arange(n) % 10
    _idx_gz(raw / f"{prefix}-images-idx3-ubyte.gz", x)
    _idx_gz(raw / f"{prefix}-labels-idx1-ubyte.gz", y.astype(np.uint8))
    sets["train" if prefix == "train" else "test"] = (x[..., None], y)
  for split, (x, y) in sets.items():
    images, labels = data.load_arrays("fashion_mnist", split, data_dir=tmp_path / "tfds", manual_dir=raw)
    assert images.shape == (len(y), 28, 28, 1) and images.dtype == np.uint8 and labels.dtype == np.int32
    assert _counter(images, labels) == _counter(x, y)
  builder = data.get_builder("fashion_mnist", data_dir=tmp_path / "tfds", manual_dir=raw)
  assert builder.info.features["label"].names[9] == "Ankle boot"
  train, test = data.limited_data_split("fashion_mnist", 2, seed=0, data_dir=tmp_path / "tfds", manual_dir=raw)
  assert np.bincount(train.labels).tolist() == [2] * 10 and test.images.shape[0] == 12


def test_idx_wrong_magic_and_bad_gzip_are_clear_errors(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  x = np.zeros((3, 28, 28), np.uint8)
  with gzip.open(raw / "t10k-images-idx3-ubyte.gz", "wb") as f:
    f.write(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + x.tobytes())  # labels' magic on an images file
  _idx_gz(raw / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
  with pytest.raises(data.CorruptFileError, match=r"t10k-images-idx3-ubyte\.gz.*magic"):
    data.get_builder("mnist", data_dir=tmp_path / "a", manual_dir=raw)
  (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data")
  with pytest.raises(data.CorruptFileError, match=r"t10k-images-idx3-ubyte\.gz.*gzip"):
    data.get_builder("mnist", data_dir=tmp_path / "b", manual_dir=raw)


def test_no_raw_files_names_them_and_where_it_looked(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"cifar-10-python\.tar\.gz.*" + tmp_path.name):
    data.get_builder("cifar10", data_dir=tmp_path / "tfds", manual_dir=tmp_path)
  with pytest.raises(ValueError, match="name"):
    data.get_builder("imagenet", data_dir=tmp_path / "tfds")


# --- CIFAR-10 ---------------------------------------------------------------------------------------------------------

def test_cifar10_python_pickles(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  expected = {"train": ([], []), "test": ([], [])}
  with tarfile.open(raw / "cifar-10-python.tar.gz", "w:gz") as tar:
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
      x = RNG.integers(0, 256, size=(4, 3072), dtype=np.uint8)
      y = list(RNG.integers(0, 10, size=4))
      _add_bytes(tar, f"cifar-10-batches-py/{name}", pickle.dumps({b"data": x, b"labels": [int(v) for v in y]}))
      split = "test" if name == "test_batch" else "train"
      expected[split][0].append(x.reshape(4, 3, 32, 32).transpose(0, 2, 3, 1))
      expected[split][1].extend(y)
    _add_bytes(tar, "cifar-10-batches-py/batches.meta", pickle.dumps({b"label_names": [b"airplane"] * 10}))
  for split, n in (("train", 20), ("test", 4)):
    images, labels = data.load_arrays("cifar10", split, data_dir=tmp_path / "tfds", manual_dir=raw)
    assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
    assert _counter(images, labels) == _counter(np.concatenate(expected[split][0]), expected[split][1])


def test_cifar10_bad_tarball(tmp_path):
  (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b garbage")
  with pytest.raises(data.CorruptFileError, match=r"cifar-10-python\.tar\.gz"):
    data.get_builder("cifar10", data_dir=tmp_path / "tfds", manual_dir=tmp_path)


# --- SVHN -------------------------------------------------------------------------------------------------------------

def test_svhn_mat_files_label_ten_is_zero(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  x = RNG.integers(0, 256, size=(32, 32, 3, 7), dtype=np.uint8)
  y = np.array([[10], [1], [2], [10], [9], [5], [3]], dtype=np.uint8)
  scipy.io.savemat(raw / "train_32x32.mat", {"X": x, "y": y})
  scipy.io.savemat(raw / "test_32x32.mat", {"X": x[..., :3], "y": y[:3]})
  images, labels = data.load_arrays("svhn", "train", data_dir=tmp_path / "tfds", manual_dir=raw)
  assert images.shape == (7, 32, 32, 3)
  assert _counter(images, labels) == _counter(np.transpose(x, (3, 0, 1, 2)), [0, 1, 2, 0, 9, 5, 3])
  builder = data.get_builder("svhn", data_dir=tmp_path / "tfds", manual_dir=raw)
  assert set(builder.info.splits.keys()) == {"train", "test"}
  with pytest.raises(FileNotFoundError, match=r"extra_32x32\.mat"):
    data.load_arrays("svhn", "extra", data_dir=tmp_path / "tfds", manual_dir=raw)
  train, test = data.retrieval_split("svhn", data_dir=tmp_path / "tfds", manual_dir=raw)
  assert train.images.shape[0] == 2 * 3 + 2 and test.num_classes == 2  # classes {0,1,2,3} / {5,9}


def test_svhn_not_a_mat_file(tmp_path):
  (tmp_path / "train_32x32.mat").write_bytes(b"MATLAB? no")
  with pytest.raises(data.CorruptFileError, match=r"train_32x32\.mat"):
    data.get_builder("svhn", data_dir=tmp_path / "tfds", manual_dir=tmp_path)


# --- CUB-200-2011 -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cub_raw(tmp_path_factory):
  raw = tmp_path_factory.mktemp("cub_raw")
  images, meta = {}, []
  image_id = 0
  for cls in (1, 2, 100, 101, 150, 200):
    for j in range(2):
      image_id += 1
      rel = f"{cls:03d}.Bird_{cls}/Bird_{cls}_{j}.jpg"
      images[image_id] = (rel, _jpeg(20 + cls % 3, 24, image_id))
      meta.append((image_id, rel, cls, int(j == 0)))
  with tarfile.open(raw / "CUB_200_2011.tgz", "w:gz") as tar:
    _add_bytes(tar, "CUB_200_2011/images.txt", "".join(f"{i} {r}\n" for i, r, _, _ in meta).encode())
    _add_bytes(tar, "CUB_200_2011/image_class_labels.txt", "".join(f"{i} {c}\n" for i, _, c, _ in meta).encode())
    _add_bytes(tar, "CUB_200_2011/train_test_split.txt", "".join(f"{i} {t}\n" for i, _, _, t in meta).encode())
    _add_bytes(tar, "CUB_200_2011/classes.txt", "".join(f"{c} {c:03d}.Bird_{c}\n" for c in range(1, 201)).encode())
    for rel, payload in images.values():
      _add_bytes(tar, f"CUB_200_2011/images/{rel}", payload)
  return raw, images, meta


def test_cub200_official_splits_and_class_disjoint_protocol(cub_raw, tmp_path):
  raw, images, meta = cub_raw
  x, y = data.load_arrays("cub200", "train", data_dir=tmp_path, manual_dir=raw, image_size=(16, 16))
  assert x.shape == (6, 16, 16, 3) and x.dtype == np.uint8
  expected = [(_decode(images[i][1], (16, 16)), c - 1) for i, _, c, t in meta if t == 1]
  assert _counter(x, y) == _counter([e[0] for e in expected], [e[1] for e in expected])
  with pytest.raises(ValueError, match="image_size"):  # sizes differ (21 and 22 rows)
    data.load_arrays("cub200", "train", data_dir=tmp_path, manual_dir=raw)
  train, test = data.retrieval_split("cub200", data_dir=tmp_path, manual_dir=raw, image_size=(16, 16))
  assert train.num_classes == 3 and test.num_classes == 3  # classes {1, 2, 100} / {101, 150, 200}
  assert train.images.shape[0] == test.images.shape[0] == 6


def test_cub200_missing_image_is_a_clear_error(tmp_path):
  with tarfile.open(tmp_path / "CUB_200_2011.tgz", "w:gz") as tar:
    _add_bytes(tar, "CUB_200_2011/images.txt", b"1 001.A/a.jpg\n")
    _add_bytes(tar, "CUB_200_2011/image_class_labels.txt", b"1 1\n")
    _add_bytes(tar, "CUB_200_2011/train_test_split.txt", b"1 1\n")
  with pytest.raises(data.CorruptFileError, match=r"001\.A/a\.jpg"):
    data.get_builder("cub200", data_dir=tmp_path / "tfds", manual_dir=tmp_path)


# --- Cars196 ----------------------------------------------------------------------------------------------------------

def test_cars196_annotations_and_images(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  classes = [1, 1, 98, 99, 196, 196, 50, 120]
  tests = [0, 1, 0, 1, 0, 1, 1, 0]
  payloads = {}
  dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("test", "O"),
           ("relative_im_path", "O")]
  annos = np.zeros((1, len(classes)), dtype=dtype)
  with tarfile.open(raw / "car_ims.tgz", "w:gz") as tar:
    for i, (c, t) in enumerate(zip(classes, tests)):
      rel = f"car_ims/{i + 1:06d}.jpg"
      payloads[rel] = _jpeg(12, 12, 100 + i)
      _add_bytes(tar, rel, payloads[rel])
      annos[0, i] = (np.array([[1]]), np.array([[2]]), np.array([[10]]), np.array([[11]]), np.array([[c]]),
                     np.array([[t]]), np.array([rel]))
  scipy.io.savemat(raw / "cars_annos.mat", {"annotations": annos, "class_names": np.array(["car"] * 196)})
  x, y = data.load_arrays("cars196", "test", data_dir=tmp_path / "tfds", manual_dir=raw)
  rels = [f"car_ims/{i + 1:06d}.jpg" for i in range(len(classes))]
  expected = [(_decode(payloads[r]), c - 1) for r, c, t in zip(rels, classes, tests) if t == 1]
  assert x.shape == (4, 12, 12, 3)
  assert _counter(x, y) == _counter([e[0] for e in expected], [e[1] for e in expected])
  builder = data.get_builder("cars196", data_dir=tmp_path / "tfds", manual_dir=raw)
  record = builder.as_data_source(split="train")[0]
  np.testing.assert_array_equal(record["bbox"], [1, 2, 10, 11])
  train, test = data.retrieval_split("cars196", data_dir=tmp_path / "tfds", manual_dir=raw)
  assert train.num_classes == 3 and test.num_classes == 3  # {1, 50, 98} / {99, 120, 196}
  assert train.images.shape[0] == 4 and test.images.shape[0] == 4
  (raw / "cars_annos.mat").unlink()
  with pytest.raises(FileNotFoundError, match=r"cars_annos\.mat"):
    data.get_builder("cars196", data_dir=tmp_path / "other", manual_dir=raw)


# --- Stanford Online Products -----------------------------------------------------------------------------------------

def test_sop_official_class_disjoint_splits(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  rows = {"train": [(1, 1, 1), (2, 1, 1), (3, 2, 3)], "test": [(4, 3, 2), (5, 3, 2), (6, 4, 12), (7, 4, 12)]}
  payloads = {}
  with zipfile.ZipFile(raw / "Stanford_Online_Products.zip", "w") as zf:
    for split, items in rows.items():
      lines = ["image_id class_id super_class_id path"]
      for image_id, cls, sup in items:
        rel = f"cat{sup}_final/{cls}_{image_id}.JPG"
        payloads[image_id] = _jpeg(10, 10, image_id)
        zf.writestr(f"Stanford_Online_Products/{rel}", payloads[image_id])
        lines.append(f"{image_id} {cls} {sup} {rel}")
      zf.writestr(f"Stanford_Online_Products/Ebay_{split}.txt", "\n".join(lines) + "\n")
  train, test = data.retrieval_split("sop", data_dir=tmp_path / "tfds", manual_dir=raw)
  assert (train.num_classes, test.num_classes) == (2, 2)
  assert _counter(test.images, test.labels) == _counter([_decode(payloads[i]) for i in (4, 5, 6, 7)], [0, 0, 1, 1])
  builder = data.get_builder("sop", data_dir=tmp_path / "tfds", manual_dir=raw)
  supers = sorted(int(r["super_label"]) for r in builder.as_data_source(split="test"))
  assert supers == [1, 1, 11, 11]
  (raw / "Stanford_Online_Products.zip").write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(data.CorruptFileError, match=r"Stanford_Online_Products\.zip"):
    data.get_builder("sop", data_dir=tmp_path / "other", manual_dir=raw)


# --- full Omniglot ------------------------------------------------------------------------------------------------------

def test_omniglot_full_zips_and_protocol_choice(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  layout = {"images_background": {"Alpha": 3, "Beta": 2}, "images_evaluation": {"Gamma": 2}}
  for stem, alphabets in layout.items():
    with zipfile.ZipFile(raw / f"{stem}.zip", "w") as zf:
      zf.writestr(f"{stem}/", b"")
      for alphabet, num_chars in alphabets.items():
        for c in range(1, num_chars + 1):
          for drawer in range(1, 4):
            zf.writestr(f"{stem}/{alphabet}/character{c:02d}/{c:04d}_{drawer:02d}.png", _png_gray(c * 10 + drawer))
  builder = data.get_builder("omniglot", data_dir=tmp_path / "tfds", manual_dir=raw)
  assert set(builder.info.splits.keys()) == {"background", "evaluation"}
  train, test = data.retrieval_split("omniglot", data_dir=tmp_path / "tfds", manual_dir=raw)  # full protocol chosen
  assert (train.num_classes, train.images.shape) == (5, (15, 105, 105, 1))
  assert (test.num_classes, test.images.shape) == (2, (6, 105, 105, 1))
  with pytest.raises(FileNotFoundError, match=r"images_background_small1\.zip"):
    data.retrieval_split("omniglot", protocol="small", data_dir=tmp_path / "tfds", manual_dir=raw)
  # A split whose zip appears later is added by rebuilding.
  with zipfile.ZipFile(raw / "images_background_small1.zip", "w") as zf:
    zf.writestr("images_background_small1/Alpha/character01/0001_01.png", _png_gray(1))
  builder = data.get_builder("omniglot", data_dir=tmp_path / "tfds", manual_dir=raw)
  assert set(builder.info.splits.keys()) == {"background", "evaluation", "small1"}
  (raw / "images_evaluation.zip").write_bytes(b"not a zip")
  with pytest.raises(data.CorruptFileError, match=r"images_evaluation\.zip"):
    data.get_builder("omniglot", data_dir=tmp_path / "broken", manual_dir=raw)
