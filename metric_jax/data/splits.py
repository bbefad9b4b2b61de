"""Splits as the seed papers use them: class-disjoint retrieval protocols and the S0 limited-data protocol.

Retrieval (train and test classes disjoint, labels remapped to 0..C-1 on each side):

| dataset          | train                          | test                           |
|------------------|--------------------------------|--------------------------------|
| `sklearn_digits` | digits 0-4                     | digits 5-9                     |
| `mnist`, `fashion_mnist`, `cifar10`, `svhn` | classes 0-4 (all prepared splits) | classes 5-9 (all prepared splits) |
| `omniglot`       | `background` (protocol `full`) or `small1` (protocol `small`) | `evaluation`, or the alphabets of `small2` that `small1` lacks |
| `cub200`         | classes 1-100 (all 11788 images) | classes 101-200              |
| `cars196`        | classes 1-98 (all 16185 images)  | classes 99-196               |
| `sop`            | official `train` (11318 classes) | official `test` (11316 classes) |

Omniglot images are inverted on loading (strokes 255, background 0) so that zero padding (shift augmentation, resizing
borders) is background, as for MNIST.

`small1` and `small2` SHARE two alphabets (Greek and Latin: 50 characters, 1000 byte-identical images), so the `small`
protocol tests only on small2's alphabets that small1 lacks (Japanese_(katakana), Sanskrit, Tagalog: 106 characters,
2120 images): train, validation and test are disjoint in alphabets, characters and images.

`retrieval_splits` adds a validation part carved out of the training classes, for selecting the step (or a
hyperparameter) without looking at the test classes (Musgrave et al. 2020):

| dataset / protocol | train                                   | validation                           | test          |
|--------------------|-----------------------------------------|--------------------------------------|---------------|
| omniglot `small`   | small1: Greek, Korean, Latin (90 characters, 1800 images) | small1: Balinese, Early_Aramaic (46 characters, 920 images) | small2: Japanese_(katakana), Sanskrit, Tagalog (106 characters, 2120 images) |
| omniglot `full`    | background minus every 5th alphabet (sorted) | every 5th background alphabet (6 of 30) | evaluation |
| any other          | the first 80 % of the training classes (sorted) | the last 20 % (at least 2 classes)   | as above      |

References:
  Musgrave, K., Belongie, S. & Lim, S.-N. (2020). A metric learning reality check. ECCV (validation classes carved out
  of the training classes, step chosen on validation).
  Oh Song, H., Xiang, Y., Jegelka, S. & Savarese, S. (2016). Deep metric learning via lifted structured feature
  embedding. CVPR (CUB / Cars / SOP retrieval splits).
  Lake, B. M. et al. (2015). Human-level concept learning through probabilistic program induction (Omniglot splits).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

from metric_jax.data import _registry


class ArraySplit(NamedTuple):
  """One side of a split held in memory.

  Attributes:
    images: uint8 `[N, H, W, C]`.
    labels: int32 `[N]`, remapped to 0..num_classes-1 (sorted order of the original labels).
    num_classes: number of distinct classes.
  """
  images: np.ndarray
  labels: np.ndarray
  num_classes: int


def make_split(images: np.ndarray, labels: np.ndarray) -> ArraySplit:
  """An `ArraySplit` with labels remapped to 0..C-1 in the sorted order of the original labels."""
  classes, remapped = np.unique(np.asarray(labels), return_inverse=True)
  return ArraySplit(np.asarray(images, dtype=np.uint8), remapped.astype(np.int32).reshape(-1), int(classes.size))


def _select_classes(images, labels, keep_classes) -> ArraySplit:
  mask = np.isin(labels, np.asarray(keep_classes))
  return make_split(images[mask], labels[mask])


def _all_splits(name, data_dir, manual_dir, image_size):
  """Concatenation of every prepared split of `name` (sorted by split name for a stable order)."""
  builder = _registry.get_builder(name, data_dir=data_dir, manual_dir=manual_dir)
  parts = [_registry.load_arrays(name, s, data_dir=data_dir, manual_dir=manual_dir, image_size=image_size)
           for s in sorted(builder.info.splits.keys())]
  return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class RetrievalSplits(NamedTuple):
  """Class-disjoint train / validation / test parts of a retrieval protocol (labels remapped to 0..C-1 in each)."""
  train: ArraySplit
  validation: ArraySplit
  test: ArraySplit


_HALF_CLASS_DATASETS = ("sklearn_digits", "mnist", "fashion_mnist", "cifar10", "svhn")
OMNIGLOT_PROTOCOLS = {"full": ("background", "evaluation"), "small": ("small1", "small2")}
# Alphabets of the training split held out for validation (`retrieval_splits`); None = every 5th alphabet, sorted.
OMNIGLOT_VALIDATION_ALPHABETS = {"full": None, "small": ("Balinese", "Early_Aramaic")}


def _omniglot_records(split, data_dir, manual_dir, image_size):
  """`(images uint8 [N, H, W, 1] inverted, alphabets [N], characters [N], raw PNG bytes [N])` of one Omniglot split."""
  records = _registry.load_records("omniglot", split, features=("image", "alphabet", "character"), data_dir=data_dir,
                                   manual_dir=manual_dir)
  text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
  images = np.stack([255 - _registry.decode_image(r["image"], image_size) for r in records])
  alphabets = np.asarray([text(r["alphabet"]) for r in records])
  characters = np.asarray([text(r["alphabet"]) + "/" + text(r["character"]) for r in records])
  return images, alphabets, characters, [bytes(r["image"]) for r in records]


def omniglot_parts(protocol: str = "small", *, data_dir=None, manual_dir=None,
                   image_size: Optional[Tuple[int, int]] = None) -> dict:
  """The Omniglot retrieval protocol's parts as `{"train" | "validation" | "test": (images, characters, png_bytes)}`.

  `characters` are "alphabet/characterNN" strings (the class identity across splits); `png_bytes` the raw files, for
  disjointness checks. "train" + "validation" together are the whole training split.
  """
  if protocol not in OMNIGLOT_PROTOCOLS:
    raise ValueError(f"`protocol` must be one of {tuple(OMNIGLOT_PROTOCOLS)} for omniglot, got {protocol!r}.")
  train_split, test_split = OMNIGLOT_PROTOCOLS[protocol]
  tr_x, tr_a, tr_c, tr_b = _omniglot_records(train_split, data_dir, manual_dir, image_size)
  te_x, te_a, te_c, te_b = _omniglot_records(test_split, data_dir, manual_dir, image_size)
  test_keep = ~np.isin(te_a, np.unique(tr_a))  # alphabets the training split also holds are not test alphabets
  alphabets = sorted(set(tr_a.tolist()))
  val_alphabets = OMNIGLOT_VALIDATION_ALPHABETS[protocol]
  if val_alphabets is None or not set(val_alphabets) <= set(alphabets):
    val_alphabets = alphabets[4::5] if len(alphabets) >= 5 else alphabets[-1:]
  is_val = np.isin(tr_a, np.asarray(val_alphabets))
  pick = lambda x, c, b, m: (x[m], c[m], [v for v, k in zip(b, m) if k])
  return {"train": pick(tr_x, tr_c, tr_b, ~is_val), "validation": pick(tr_x, tr_c, tr_b, is_val),
          "test": pick(te_x, te_c, te_b, test_keep), "train_all": (tr_x, tr_c, tr_b)}


def _omniglot_protocol(protocol, data_dir, manual_dir):
  if protocol is None:
    _, manual = _registry.resolve_dirs("omniglot", data_dir, manual_dir)
    available = _registry.BUILDERS["omniglot"].available_splits(manual)
    protocol = "full" if all(s in available for s in OMNIGLOT_PROTOCOLS["full"]) else "small"
  if protocol not in OMNIGLOT_PROTOCOLS:
    raise ValueError(f"`protocol` must be one of {tuple(OMNIGLOT_PROTOCOLS)} for omniglot, got {protocol!r}.")
  return protocol


def _carve_validation(split: ArraySplit, fraction: float = 0.2, min_classes: int = 2) -> Tuple[ArraySplit, ArraySplit]:
  """The last `fraction` of `split`'s classes (at least `min_classes`, at least one left) as validation."""
  num_val = min(max(min_classes, int(round(fraction * split.num_classes))), split.num_classes - 1)
  if num_val < 1:
    raise ValueError(f"cannot carve validation classes out of {split.num_classes} training class(es).")
  first_val = split.num_classes - num_val
  return (_select_classes(split.images, split.labels, range(first_val)),
          _select_classes(split.images, split.labels, range(first_val, split.num_classes)))


def retrieval_splits(name: str, *, protocol: Optional[str] = None, data_dir=None, manual_dir=None,
                     image_size: Optional[Tuple[int, int]] = None) -> RetrievalSplits:
  """Class-disjoint `(train, validation, test)` of dataset `name`: `retrieval_split`'s test set, and its training
  classes divided into train and validation (see the module docstring's second table). Select steps and
  hyperparameters on `validation`; report `test`."""
  if name == "omniglot":
    parts = omniglot_parts(_omniglot_protocol(protocol, data_dir, manual_dir), data_dir=data_dir,
                           manual_dir=manual_dir, image_size=image_size)
    return RetrievalSplits(*(make_split(parts[k][0], parts[k][1]) for k in ("train", "validation", "test")))
  train, test = retrieval_split(name, protocol=protocol, data_dir=data_dir, manual_dir=manual_dir,
                                image_size=image_size)
  train, validation = _carve_validation(train)
  return RetrievalSplits(train, validation, test)


def retrieval_split(name: str, *, protocol: Optional[str] = None, data_dir=None, manual_dir=None,
                    image_size: Optional[Tuple[int, int]] = None) -> Tuple[ArraySplit, ArraySplit]:
  """Class-disjoint (train, test) split of dataset `name` for retrieval / clustering evaluation.

  Args:
    name: dataset short name (see the table in the module docstring).
    protocol: Omniglot only: `full` (background -> evaluation) or `small` (small1 -> the alphabets of small2 that
      small1 lacks). Default: `full` when both full zips are present, else `small`.
    data_dir, manual_dir: as in `metric_jax.data.get_builder`.
    image_size: optional `(H, W)` to resize to (needed for CUB / Cars / SOP, whose images differ in size).

  Returns:
    `(train, test)` `ArraySplit`s with disjoint classes, each with labels remapped to 0..C-1.
  """
  if name == "omniglot":
    parts = omniglot_parts(_omniglot_protocol(protocol, data_dir, manual_dir), data_dir=data_dir,
                           manual_dir=manual_dir, image_size=image_size)
    return make_split(*parts["train_all"][:2]), make_split(*parts["test"][:2])
  if protocol is not None:
    raise ValueError(f"`protocol` is only used for omniglot, got {protocol!r} for {name!r}.")
  if name == "sop":
    train = make_split(*_registry.load_arrays(name, "train", data_dir=data_dir, manual_dir=manual_dir,
                                              image_size=image_size))
    test = make_split(*_registry.load_arrays(name, "test", data_dir=data_dir, manual_dir=manual_dir,
                                             image_size=image_size))
    return train, test
  images, labels = _all_splits(name, data_dir, manual_dir, image_size)
  if name in _HALF_CLASS_DATASETS:
    return _select_classes(images, labels, range(0, 5)), _select_classes(images, labels, range(5, 10))
  if name == "cub200":  # labels are class_id - 1, so classes 1-100 are labels 0-99.
    return _select_classes(images, labels, range(0, 100)), _select_classes(images, labels, range(100, 200))
  if name == "cars196":
    return _select_classes(images, labels, range(0, 98)), _select_classes(images, labels, range(98, 196))
  raise ValueError(f"`name` has no retrieval protocol: {name!r}.")


def stratified_halves(labels: np.ndarray, *, seed: int, first_size: int) -> Tuple[np.ndarray, np.ndarray]:
  """Seeded stratified split of indices into a first part of `first_size` and the rest, class proportions kept.

  Each class contributes `round(first_size * n_c / N)` (largest remainders fix the total) of its examples, drawn
  uniformly without replacement. Returns sorted index arrays `(first, rest)`.
  """
  labels = np.asarray(labels)
  n = labels.shape[0]
  if not 0 < first_size < n:
    raise ValueError(f"`first_size` must be in (0, {n}), got {first_size}.")
  rng = np.random.default_rng(seed)
  classes, counts = np.unique(labels, return_counts=True)
  exact = first_size * counts / n
  take = np.floor(exact).astype(int)
  remainder = first_size - take.sum()
  order = np.argsort(-(exact - take), kind="stable")
  take[order[:remainder]] += 1
  first = []
  for c, k in zip(classes, take):
    members = np.flatnonzero(labels == c)
    first.append(rng.choice(members, size=k, replace=False))
  first = np.sort(np.concatenate(first))
  rest = np.setdiff1d(np.arange(n), first)
  return first, rest


def draw_per_class(labels: np.ndarray, samples_per_class: int, *, seed: int) -> np.ndarray:
  """Seeded draw of `samples_per_class` indices of every class, without replacement; sorted indices."""
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  chosen = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    if members.size < samples_per_class:
      raise ValueError(f"`samples_per_class`={samples_per_class} but class {c} has only {members.size} examples.")
    chosen.append(rng.choice(members, size=samples_per_class, replace=False))
  return np.sort(np.concatenate(chosen))


def _limited_pool(name, data_dir, manual_dir, split_seed, image_size):
  """`(pool_x, pool_y, test_x, test_y)` of the limited-data protocol (see `limited_data_split`)."""
  if name not in _HALF_CLASS_DATASETS:
    raise ValueError(f"`name` must be one of {_HALF_CLASS_DATASETS} for the limited-data protocol, got {name!r}.")
  cls = _registry.BUILDERS[name]
  _, manual = _registry.resolve_dirs(name, data_dir, manual_dir)
  available = cls.available_splits(manual)
  if "train" in available and "test" in available:
    pool_x, pool_y = _registry.load_arrays(name, "train", data_dir=data_dir, manual_dir=manual_dir, image_size=image_size)
    test_x, test_y = _registry.load_arrays(name, "test", data_dir=data_dir, manual_dir=manual_dir, image_size=image_size)
    return pool_x, pool_y, test_x, test_y
  split = "test" if "test" in available else "train"
  if split not in available:
    raise cls.missing_error("test", manual)
  x, y = _registry.load_arrays(name, split, data_dir=data_dir, manual_dir=manual_dir, image_size=image_size)
  pool, test = stratified_halves(y, seed=split_seed, first_size=y.shape[0] // 2)
  return x[pool], y[pool], x[test], y[test]


def _check_samples_per_class(samples_per_class):
  if not isinstance(samples_per_class, (int, np.integer)) or samples_per_class < 0:
    raise ValueError(f"`samples_per_class` must be a positive integer (or 0: the whole pool), got "
                     f"{samples_per_class!r}.")


def _relabelled(parts, pool_y, test_y):
  """`ArraySplit`s of `[(images, labels), ...]` sharing one label space (the classes of the pool and the test set)."""
  classes = np.unique(np.concatenate([pool_y, test_y]))
  lookup = {int(c): i for i, c in enumerate(classes)}
  return tuple(ArraySplit(x, np.asarray([lookup[int(v)] for v in y], dtype=np.int32), int(classes.size))
               for x, y in parts)


def limited_data_split(name: str, samples_per_class: int, *, seed: int, data_dir=None, manual_dir=None,
                       split_seed: int = 0, image_size: Optional[Tuple[int, int]] = None
                       ) -> Tuple[ArraySplit, ArraySplit]:
  """S0's limited-data protocol: `samples_per_class` training images per class drawn with `seed`; the full test set.

  The training pool is the `train` split and the test set the `test` split (MNIST: the official 60,000 / 10,000). When
  there is no `train` split (`sklearn_digits`: one split; a folder with only the MNIST test files), the available images
  are split into a pool and a test set of equal size, stratified by class, with `split_seed` (fixed by default, so every
  `seed` of the draw is evaluated on the same test set, as in the paper's three repeated draws).

  Args:
    name: a classification dataset: `sklearn_digits`, `mnist`, `fashion_mnist`, `cifar10`, `svhn`.
    samples_per_class: N, images per class in the training set (S0 uses e.g. 60 / 100 / 500 on MNIST); 0 takes the
      whole pool (S0's "ALL"; `seed` then only seeds the network's initialisation).
    seed: seed of the draw from the pool.
    split_seed: seed of the pool / test split when there is no `train` split.

  Returns:
    `(train, test)` `ArraySplit`s sharing the label space (labels remapped to 0..C-1 consistently).

  References:
    S0 (PairNet: classification + local distribution (pairwise) constraint; see DESIGN.md): limited-data protocol,
    N samples per class, each draw repeated 3 times, mean +- std.
  """
  _check_samples_per_class(samples_per_class)
  pool_x, pool_y, test_x, test_y = _limited_pool(name, data_dir, manual_dir, split_seed, image_size)
  chosen = (np.arange(len(pool_y)) if samples_per_class == 0
            else draw_per_class(pool_y, samples_per_class, seed=seed))
  return _relabelled([(pool_x[chosen], pool_y[chosen]), (test_x, test_y)], pool_y, test_y)


def limited_data_splits(name: str, samples_per_class: int, validation_per_class: int, *, seed: int, data_dir=None,
                        manual_dir=None, split_seed: int = 0, image_size: Optional[Tuple[int, int]] = None
                        ) -> Tuple[ArraySplit, ArraySplit, ArraySplit]:
  """`limited_data_split` with a validation part held out of the training pool: `(train, validation, test)`.

  `validation_per_class` images of every class are drawn from the pool with `split_seed` (the same validation images
  for every `seed`), then the `samples_per_class` training images (0: all the rest) from what is left with `seed`, so
  train, validation and test never share an image. Validation has the training classes (S0 is classification): use it
  to choose a learning rate or a step budget without looking at the test set.
  """
  _check_samples_per_class(samples_per_class)
  if not isinstance(validation_per_class, (int, np.integer)) or validation_per_class <= 0:
    raise ValueError(f"`validation_per_class` must be a positive integer, got {validation_per_class!r}.")
  pool_x, pool_y, test_x, test_y = _limited_pool(name, data_dir, manual_dir, split_seed, image_size)
  held = draw_per_class(pool_y, validation_per_class, seed=split_seed)
  rest = np.setdiff1d(np.arange(len(pool_y)), held)
  chosen = rest if samples_per_class == 0 else rest[draw_per_class(pool_y[rest], samples_per_class, seed=seed)]
  return _relabelled([(pool_x[chosen], pool_y[chosen]), (pool_x[held], pool_y[held]), (test_x, test_y)],
                     pool_y, test_y)
