"""metric_jax.data: offline tfds builders, class-disjoint splits, samplers, a prefetching loader and preprocessing.

Datasets are prepared with tensorflow-datasets *without TensorFlow*: builders write array_record files, reading goes through
`tfds.data_source`, pillow decodes image files (see `metric_jax.data.builders._base` for the feature choices).

  get_builder(name, *, data_dir=None, manual_dir=None)          prepared tfds builder
  load_arrays(name, split, ...)                                 (images uint8 [N, H, W, C], labels int32 [N])
  retrieval_split / limited_data_split                          (train, test) ArraySplits
  limited_data_splits                                           (train, validation, test), S0 with a held-out part
  retrieval_splits                                              (train, validation, test), class-disjoint
  PKSampler, NPairSampler, PairSampler, RandomSampler, ClassAccumulatingSampler
  BatchLoader(images, labels, sampler, *, transform, start_step, prefetch, seed)
  preprocessing: to_float, normalize, GCN, ZCA, LCN, resize, crops, make_transform
"""

from metric_jax.data import preprocessing
from metric_jax.data._registry import decode_image, get_builder, load_arrays
from metric_jax.data.builders import BUILDERS, CorruptFileError, MissingFileError
from metric_jax.data.loader import BatchLoader
from metric_jax.data.samplers import (ClassAccumulatingSampler, NPairSampler, PairSampler, PKSampler, RandomSampler,
                                      greedy_negative_class_miner)
from metric_jax.data.splits import (ArraySplit, RetrievalSplits, limited_data_split, limited_data_splits, make_split,
                                   retrieval_split, retrieval_splits)

__all__ = [
    "ArraySplit", "BUILDERS", "BatchLoader", "ClassAccumulatingSampler", "CorruptFileError", "MissingFileError",
    "NPairSampler", "PKSampler", "PairSampler", "RandomSampler", "decode_image", "get_builder",
    "greedy_negative_class_miner", "limited_data_split", "limited_data_splits", "load_arrays", "make_split",
    "preprocessing", "retrieval_split", "retrieval_splits", "RetrievalSplits",
]
