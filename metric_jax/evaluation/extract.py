"""Embedding extraction: a jitted embedding function over fixed-size padded batches.

Every batch handed to the compiled function has the same shape `[batch_size, H, W, C]` (the last one is padded with
zeros and its padded rows are dropped), so `embed_fn` is traced and compiled once however many images there are.
Optionally the embedding of the horizontally flipped image is averaged in (test-time augmentation), and the result is
L2-normalized.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from metric_jax.evaluation import _inputs


def _flip_average(fn):
  def embed(images):
    return 0.5 * (fn(images) + fn(jnp.flip(images, axis=2)))
  return embed


def extract_embeddings(embed_fn: Callable, images, *, batch_size: int = 256, normalize: bool = False,
                       flip_average: bool = False) -> np.ndarray:
  """Runs `embed_fn` over `images` in padded batches and returns the embeddings.

  `e = embed_fn(x)`, or `(embed_fn(x) + embed_fn(flip_W(x))) / 2` with `flip_average`; then `e / |e|` with `normalize`.

  Args:
    embed_fn: `fn(images [b, H, W, C] float32) -> [b, D]`, a pure function (close over the model's parameters,
      e.g. an `nnx.merge`d model in eval mode). It is jitted here; rows must not depend on each other (BatchNorm in
      inference mode), because the last batch holds zero padding.
    images: `[N, H, W, C]` array (numpy, jax, or anything sliceable with `len` and `images[i:j]` giving arrays).
    batch_size: rows per compiled call.
    normalize: L2-normalize each embedding.
    flip_average: average with the embedding of the image flipped along W (axis 2).

  Returns:
    float32 numpy `[N, D]`.
  """
  batch_size = _inputs.check_positive_int(batch_size, "batch_size")
  num = len(images)
  if num == 0:
    raise ValueError("`images` is empty; there is nothing to embed.")
  fn = _flip_average(embed_fn) if flip_average else embed_fn
  if normalize:
    inner = fn

    def fn(x):
      e = inner(x)
      return e * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(e), axis=-1, keepdims=True), 1e-24))
  compiled = jax.jit(fn)
  outputs = []
  for start in range(0, num, batch_size):
    batch = np.asarray(images[start:start + batch_size], dtype=np.float32)
    if batch.ndim != 4:
      raise ValueError(f"`images` must be [N, H, W, C], got batches of shape {batch.shape}.")
    valid = batch.shape[0]
    if valid < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - valid,) + batch.shape[1:], np.float32)])
    out = compiled(batch)
    if out.ndim != 2 or out.shape[0] != batch_size:
      raise ValueError(f"`embed_fn` must map [b, H, W, C] to [b, D], got output shape {out.shape} for b={batch_size}.")
    outputs.append(out[:valid])
  embeddings = np.concatenate([np.asarray(o, dtype=np.float32) for o in outputs])
  finite = np.isfinite(embeddings).all(axis=1)
  if not finite.all():
    raise ValueError(f"`embed_fn` produced NaN or infinite embeddings for {int((~finite).sum())} image(s), first at "
                     f"index {int(np.flatnonzero(~finite)[0])}.")
  return embeddings


__all__ = ["extract_embeddings"]
