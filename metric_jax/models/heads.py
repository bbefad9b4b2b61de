"""Embedding heads on top of a backbone, and multi-level feature fusion (S1).

`Embedder(backbone, ...)` maps images `[B, H, W, C]` to `{"embedding": [B, D], "features": [B, F]}`: for every chosen
backbone layer, its output is global-average-pooled (4-D conv maps) or flattened, passed through a linear embedding head,
and the heads' outputs are concatenated (one layer: a plain embedding head; several: multi-level feature fusion).
`features` is the concatenation of the heads' inputs (the pre-embedding features, e.g. for S2's original densities D0).
With `normalize=True` the embedding is L2-normalized, `e = z / |z|`.

Parameter groups: the backbone's parameters live under `backbone`, the new layers under `heads` (see
`metric_jax.train.optim.param_labels`), so the heads can get a 10x learning rate and the backbone can be frozen.

References:
  (S1) General pair-based weighting loss: multi-level feature fusion, embedding heads on several backbone stages.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from metric_jax import pairwise


def pool_features(x):
  """`[B, h, w, c] -> [B, c]` by global average pooling; `[B, F]` stays; other ranks are flattened."""
  if x.ndim == 4:
    return jnp.mean(x, axis=(1, 2))
  return x.reshape(x.shape[0], -1)


class EmbeddingHead(nnx.Module):
  """Linear embedding `z = W x + b`, `[B, F] -> [B, D]`, optionally L2-normalized."""

  def __init__(self, in_features: int, embedding_dim: int, *, normalize: bool = False, rngs: nnx.Rngs):
    self.linear = nnx.Linear(in_features, embedding_dim, rngs=rngs)
    self.normalize = normalize

  def __call__(self, x):
    z = self.linear(x)
    return pairwise.l2_normalize(z) if self.normalize else z


class Embedder(nnx.Module):
  """Backbone + embedding head(s) on one or several of its layers (multi-level fusion).

  Args:
    backbone: an nnx module returning a dict of named layer outputs (`LeNet`, `SmallResNet`, ...).
    input_shape: `(H, W, C)`, used once to infer the layers' widths.
    embedding_dim: total embedding width D; an int is split evenly over `layers` (the last head takes the remainder),
      a sequence gives each head's width.
    layers: backbone layer names to put heads on; default the backbone's `out_name`.
    normalize: L2-normalize the concatenated embedding.
  """

  def __init__(self, backbone: nnx.Module, input_shape: Sequence[int], embedding_dim: Union[int, Sequence[int]], *,
               layers: Optional[Sequence[str]] = None, normalize: bool = True, rngs: nnx.Rngs):
    self.backbone = backbone
    layers = tuple(layers) if layers else (backbone.out_name,)
    probe = backbone(jnp.zeros((1, *input_shape), jnp.float32), train=False)
    for name in layers:
      if name not in probe:
        raise ValueError(f"`layers` names {name!r}, not a layer of the backbone ({', '.join(probe)}).")
    if isinstance(embedding_dim, int):
      base = embedding_dim // len(layers)
      if base < 1:
        raise ValueError(f"`embedding_dim`={embedding_dim} is smaller than the number of `layers` ({len(layers)}).")
      dims = [base] * (len(layers) - 1) + [embedding_dim - base * (len(layers) - 1)]
    else:
      dims = list(embedding_dim)
      if len(dims) != len(layers):
        raise ValueError(f"`embedding_dim` gives {len(dims)} widths for {len(layers)} `layers`.")
    self.layers = layers
    self.heads = nnx.List([
        EmbeddingHead(int(pool_features(probe[name]).shape[-1]), int(d), rngs=rngs) for name, d in zip(layers, dims)])
    self.normalize = normalize
    self.embedding_dim = int(sum(dims))

  def __call__(self, images, *, train: bool = False) -> Dict[str, jax.Array]:
    out = self.backbone(images, train=train)
    # Heads, embedding and loss in float32 whatever the backbone's computation dtype (bf16 mixed precision).
    feats = [pool_features(out[name]).astype(jnp.float32) for name in self.layers]
    z = jnp.concatenate([head(f) for head, f in zip(self.heads, feats)], axis=-1)
    if self.normalize:
      z = pairwise.l2_normalize(z)
    return {"embedding": z, "features": jnp.concatenate(feats, axis=-1)}
