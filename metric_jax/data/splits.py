"""Splits as the seed papers use them: class-disjoint retrieval protocols and the S0 limited-data protocol.

Retrieval (train and test classes disjoint, labels remapped to 0..C-1 on each side):

| dataset          | train                          | test                           |
|------------------|--------------------------------|--------------------------------|
| `sklearn_digits` | digits 0-4                     | digits 5-9                     |
| `mnist`, `fashion_mnist`, `cifar10`, `svhn` | classes 0-4 (all prepared splits) | classes 5-9 (all prepared splits) |
| `omniglot`       | `background` (protocol `full`) or `small1` (protocol `small`) | `evaluation` or `small2` |
| `cub200`         | classes 1-100 (all 11788 images) | classes 101-200              |
| `cars196`        | classes 1-98 (all 16185 images)  | classes 99-196               |
| `sop`            | official `train` (11318 classes) | official `test` (11316 classes) |

References:
  Oh Song, H., Xiang, Y., Jegelka, S. & Savarese, S. (2016). Deep metric learning via lifted structured feature
  embedding. CVPR (CUB / Cars / SOP retrieval splits).
  Lake, B. M. et al. (2015). Human-level concept learning through probabilistic program induction (Omniglot splits).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

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


_HALF_CLASS_DATASETS = ("sklearn_digits", "mnist", "fashion_mnist", "cifar10", "svhn")
OMNIGLOT_PROTOCOLS = {"full": ("background", "evaluation"), "small": ("small1", "small2")}


def retrieval_split(name: str, *, protocol: Optional[str] = None, data_dir=None, manual_dir=None,
                    image_size: Optional[Tuple[int, int]] = None) -> Tuple[ArraySplit, ArraySplit]:
  """Class-disjoint (train, test) split of dataset `name` for retrieval / clustering evaluation.

  Args:
    name: dataset short name (see the table in the module docstring).
    protocol: Omniglot only: `full` (background -> evaluation) or `small` (small1 -> small2). Default: `full` when both
      full zips are present, else `small`.
    data_dir, manual_dir: as in `metric_jax.data.get_builder`.
    image_size: optional `(H, W)` to resize to (needed for CUB / Cars / SOP, whose images differ in size).

  Returns:
    `(train, test)` `ArraySplit`s with disjoint classes, each with labels remapped to 0..C-1.
  """
  if name == "omniglot":
    if protocol is None:
      _, manual = _registry.resolve_dirs(name, data_dir, manual_dir)
      available = _registry.BUILDERS[name].available_splits(manual)
      protocol = "full" if all(s in available for s in OMNIGLOT_PROTOCOLS["full"]) else "small"
    if protocol not in OMNIGLOT_PROTOCOLS:
      raise ValueError(f"`protocol` must be one of {tuple(OMNIGLOT_PROTOCOLS)} for omniglot, got {protocol!r}.")
    train_split, test_split = OMNIGLOT_PROTOCOLS[protocol]
    train = make_split(*_registry.load_arrays(name, train_split, data_dir=data_dir, manual_dir=manual_dir,
                                              image_size=image_size))
    test = make_split(*_registry.load_arrays(name, test_split, data_dir=data_dir, manual_dir=manual_dir,
                                             image_size=image_size))
    return train, test
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


def limited_data_split(name: str, samples_per_class: int, *, seed: int, data_dir=None, manual_dir=None,
                       split_seed: int = 0, image_size: Optional[Tuple[int, int]] = None
                       ) -> Tuple[ArraySplit, ArraySplit]:
  """S0's limited-data protocol: `samples_per_class` training images per class drawn with `seed`; the full test set.

  The training pool is the `train` split and the test set the `test` split. When there is no `train` split (offline
  MNIST: only the 10k test images exist; `sklearn_digits`: one split), the available images are split into a pool and a
  test set of equal size (5000 / 5000 for MNIST), stratified by class, with `split_seed` (fixed by default, so every `seed`
  of the draw is evaluated on the same test set, as in the paper's three repeated draws).

  Args:
    name: a classification dataset: `sklearn_digits`, `mnist`, `fashion_mnist`, `cifar10`, `svhn`.
    samples_per_class: N, images per class in the training set (S0 uses e.g. 60 / 100 / 500 on MNIST).
    seed: seed of the draw from the pool.
    split_seed: seed of the pool / test split when there is no `train` split.

  Returns:
    `(train, test)` `ArraySplit`s sharing the label space (labels remapped to 0..C-1 consistently).

  References:
    S0 (PairNet: classification + local distribution (pairwise) constraint; see DESIGN.md): limited-data protocol,
    N samples per class, each draw repeated 3 times, mean +- std.
  """
  if name not in _HALF_CLASS_DATASETS:
    raise ValueError(f"`name` must be one of {_HALF_CLASS_DATASETS} for the limited-data protocol, got {name!r}.")
  if not isinstance(samples_per_class, (int, np.integer)) or samples_per_class <= 0:
    raise ValueError(f"`samples_per_class` must be a positive integer, got {samples_per_class!r}.")
  cls = _registry.BUILDERS[name]
  _, manual = _registry.resolve_dirs(name, data_dir, manual_dir)
  available = cls.available_splits(manual)
  if "train" in available and "test" in available:
    pool_x, pool_y = _registry.load_arrays(name, "train", data_dir=data_dir, manual_dir=manual_dir, image_size=image_size)
    test_x, test_y = _registry.load_arrays(name, "test", data_dir=data_dir, manual_dir=manual_dir, image_size=image_size)
  else:
    split = "test" if "test" in available else "train"
    if split not in available:
      raise cls.missing_error("test", manual)
    x, y = _registry.load_arrays(name, split, data_dir=data_dir, manual_dir=manual_dir, image_size=image_size)
    pool, test = stratified_halves(y, seed=split_seed, first_size=y.shape[0] // 2)
    pool_x, pool_y, test_x, test_y = x[pool], y[pool], x[test], y[test]
  chosen = draw_per_class(pool_y, samples_per_class, seed=seed)
  classes = np.unique(np.concatenate([pool_y, test_y]))
  remap = {int(c): i for i, c in enumerate(classes)}
  relabel = lambda y: np.asarray([remap[int(v)] for v in y], dtype=np.int32)
  train = ArraySplit(pool_x[chosen], relabel(pool_y[chosen]), int(classes.size))
  test = ArraySplit(test_x, relabel(test_y), int(classes.size))
  return train, test
