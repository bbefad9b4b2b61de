"""The S0 (PairNet) two-channel setup: one shared trunk applied to both images of a pair, two softmax classifiers.

A pair batch is `concat(first [P], second [P])` (two independently shuffled batches, `metric_jax.data.PairSampler`).
The trunk (shared weights) maps every image to its layer outputs; `features` are taken from layer k (`feature_layer`,
flattened), and the classifiers `W1` (first channel) and `W2` (second channel) map the trunk's `classifier_layer` output to
class logits. `TwoChannelNet(images)` returns the per-image `features [2P, F_k]` and `classifier_inputs [2P, F]`; the
objectives in `metric_jax.train.objectives` apply W1 to the first half, W2 to the second (the pairs are split only after
the global batch has been gathered, so the pairing survives data parallelism).

References:
  (S0) PairNet: classification + local distribution (pairwise) constraint; total loss CLoss_i + CLoss_j + lambda * PLoss.
"""

from __future__ import annotations

from typing import Dict, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from metric_jax.models.heads import pool_features


class TwoChannelNet(nnx.Module):
  """Shared trunk + softmax classifiers W1, W2 (`separate_classifiers=False`: W1 on both channels).

  Args:
    trunk: nnx module returning a dict of named layer outputs (e.g. `LeNet(..., num_outputs=None)`).
    input_shape: `(H, W, C)`.
    num_classes: classifier outputs.
    feature_layer: layer k whose (flattened) output the pairwise loss sees; default the trunk's `out_name`.
    classifier_layer: layer the classifiers read; default the trunk's `out_name`.
  """

  def __init__(self, trunk: nnx.Module, input_shape, num_classes: int, *, feature_layer: Optional[str] = None,
               classifier_layer: Optional[str] = None, separate_classifiers: bool = True, rngs: nnx.Rngs):
    self.trunk = trunk
    probe = trunk(jnp.zeros((1, *input_shape), jnp.float32), train=False)
    self.feature_layer = feature_layer or trunk.out_name
    self.classifier_layer = classifier_layer or trunk.out_name
    for arg, name in (("feature_layer", self.feature_layer), ("classifier_layer", self.classifier_layer)):
      if name not in probe:
        raise ValueError(f"`{arg}` names {name!r}, not a layer of the trunk ({', '.join(probe)}).")
    width = int(probe[self.classifier_layer].reshape(1, -1).shape[-1])
    self.heads = nnx.List([nnx.Linear(width, num_classes, rngs=rngs)] +
                          ([nnx.Linear(width, num_classes, rngs=rngs)] if separate_classifiers else []))
    self.num_classes = num_classes

  @property
  def w1(self):
    return self.heads[0]

  @property
  def w2(self):
    return self.heads[-1]

  def __call__(self, images, *, train: bool = False) -> Dict[str, jax.Array]:
    out = self.trunk(images, train=train)
    feats = out[self.feature_layer].reshape(images.shape[0], -1).astype(jnp.float32)  # float32 loss (bf16 trunks)
    return {"embedding": feats, "features": feats,
            "classifier_inputs": out[self.classifier_layer].reshape(images.shape[0], -1).astype(jnp.float32)}

  def logits(self, classifier_inputs, channel: int):
    """Class logits `[N, num_classes]` of classifier W1 (`channel=0`) or W2 (`channel=1`)."""
    return (self.w1 if channel == 0 else self.w2)(classifier_inputs)
