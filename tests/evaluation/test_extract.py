"""extract_embeddings: one compilation for any number of images, padded last batch trimmed, flip-averaging, L2."""

import jax.numpy as jnp
import numpy as np
import pytest

from metric_jax.evaluation import extract_embeddings

RNG = np.random.default_rng(0)
WEIGHTS = RNG.standard_normal((4 * 3 * 2, 5)).astype(np.float32)
IMAGES = RNG.standard_normal((23, 4, 3, 2)).astype(np.float32)  # [N, H, W, C]; 23 is not a multiple of 8


def reference(images):
  return images.reshape(len(images), -1).astype(np.float64) @ WEIGHTS


def make_embed():
  traces = []

  def embed(x):
    traces.append(x.shape)
    return jnp.tanh(x.reshape(x.shape[0], -1) @ WEIGHTS)

  return embed, traces


def test_padded_batches_compile_once_and_are_trimmed():
  embed, traces = make_embed()
  out = extract_embeddings(embed, IMAGES, batch_size=8)
  assert out.shape == (23, 5) and out.dtype == np.float32
  assert traces == [(8, 4, 3, 2)]
  np.testing.assert_allclose(out, np.tanh(reference(IMAGES)), rtol=1e-5, atol=1e-6)


def test_flip_average_and_normalize():
  embed, _ = make_embed()
  out = extract_embeddings(embed, jnp.asarray(IMAGES), batch_size=16, normalize=True, flip_average=True)
  flipped = IMAGES[:, :, ::-1, :]
  want = 0.5 * (np.tanh(reference(IMAGES)) + np.tanh(reference(np.ascontiguousarray(flipped))))
  want /= np.linalg.norm(want, axis=1, keepdims=True)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_errors():
  embed, _ = make_embed()
  with pytest.raises(ValueError, match="images"):
    extract_embeddings(embed, IMAGES[:0])
  with pytest.raises(ValueError, match="batch_size"):
    extract_embeddings(embed, IMAGES, batch_size=0)
  with pytest.raises(ValueError, match="embed_fn"):
    extract_embeddings(lambda x: jnp.log(x.reshape(x.shape[0], -1) - 10.0), IMAGES, batch_size=8)
  with pytest.raises(ValueError, match="embed_fn"):
    extract_embeddings(lambda x: x.sum(), IMAGES, batch_size=8)
