"""Preprocessing against direct numpy computations: GCN, ZCA, LCN, scaling, crops, resize, make_transform."""

import numpy as np
import pytest
import scipy.linalg

from metric_jax.data import preprocessing as pp

RNG = np.random.default_rng(0)


def test_to_float_and_normalize():
  x = RNG.integers(0, 256, size=(2, 3, 4, 3), dtype=np.uint8)
  f = pp.to_float(x)
  assert f.dtype == np.float32 and f.min() >= 0 and f.max() <= 1
  np.testing.assert_allclose(f, x / 255.0, rtol=1e-6)
  mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
  out = pp.normalize(f, mean, std)
  for c in range(3):
    np.testing.assert_allclose(out[..., c], (x[..., c] / 255.0 - mean[c]) / std[c], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="std"):
    pp.normalize(f, mean, [1.0, 0.0, 1.0])


def test_channel_stats_matches_numpy():
  x = RNG.integers(0, 256, size=(5, 4, 4, 3), dtype=np.uint8)
  mean, std = pp.channel_stats(x)
  for c in range(3):
    values = x[..., c].ravel() / 255.0
    assert mean[c] == pytest.approx(values.mean()) and std[c] == pytest.approx(values.std())


def test_global_contrast_normalize_matches_per_image_formula():
  x = RNG.random((3, 5, 4, 3)).astype(np.float32)
  x[2] = 0.7  # a constant image must give zeros, not NaN
  out = pp.global_contrast_normalize(x, scale=55.0, sqrt_bias=0.1)
  for i in range(3):
    v = x[i].astype(np.float64).ravel()
    centred = v - v.mean()
    expected = 55.0 * centred / max(1e-8, np.sqrt(0.1 + (centred ** 2).mean()))
    np.testing.assert_allclose(out[i].ravel(), expected, rtol=1e-5, atol=1e-5)
  assert np.all(out[2] == 0) and np.isfinite(out).all()


def test_zca_matches_inverse_square_root_of_covariance():
  x = RNG.normal(size=(200, 3, 3, 2)) * np.linspace(0.5, 3.0, 18).reshape(3, 3, 2) + 1.5
  x[:, 0, 0, 0] += 0.8 * x[:, 1, 1, 1]  # correlated pixels
  eps = 0.1
  zca = pp.fit_zca(x, eps=eps)
  flat = x.reshape(200, -1)
  centred = flat - flat.mean(0)
  cov = centred.T @ centred / 200
  reference = np.real(scipy.linalg.inv(scipy.linalg.sqrtm(cov + eps * np.eye(18))))
  np.testing.assert_allclose(zca.matrix, reference, rtol=1e-4, atol=1e-5)
  white = pp.fit_zca(x, eps=0.0)
  y = pp.apply_zca(x, white).reshape(200, -1).astype(np.float64)
  np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(18), atol=1e-4)  # whitened: identity covariance
  np.testing.assert_allclose(white.matrix, white.matrix.T, atol=1e-5)  # ZCA (not PCA): symmetric
  with pytest.raises(ValueError, match="x"):
    pp.apply_zca(x[:, :2], zca)


def _lcn_reference(x, size, sigma, min_divisor):
  """Direct LCN: explicit windows, Gaussian weights renormalized over the in-image part of each window."""
  b, h, w, c = x.shape
  r = np.arange(size) - size // 2
  g1 = np.exp(-r ** 2 / (2 * sigma ** 2))
  g = np.outer(g1, g1)
  half = size // 2

  def local_mean(img):  # img [h, w]
    out = np.zeros((h, w))
    for i in range(h):
      for j in range(w):
        total, mass = 0.0, 0.0
        for di in range(-half, half + 1):
          for dj in range(-half, half + 1):
            ii, jj = i + di, j + dj
            if 0 <= ii < h and 0 <= jj < w:
              total += g[di + half, dj + half] * img[ii, jj]
              mass += g[di + half, dj + half]
        out[i, j] = total / mass
    return out

  out = np.zeros_like(x, dtype=np.float64)
  for n in range(b):
    v = x[n] - local_mean(x[n].mean(axis=2))[..., None]
    s = np.sqrt(local_mean((v ** 2).mean(axis=2)))
    divisor = np.maximum(np.maximum(s, s.mean()), min_divisor)
    out[n] = v / divisor[..., None]
  return out


def test_local_contrast_normalize_matches_direct_windows():
  x = RNG.random((2, 7, 6, 3))
  out = pp.local_contrast_normalize(x, size=5, sigma=1.5)
  np.testing.assert_allclose(out, _lcn_reference(x, 5, 1.5, 1e-4), rtol=1e-4, atol=1e-5)
  flat = pp.local_contrast_normalize(np.full((1, 6, 6, 1), 0.3), size=3, sigma=1.0)
  assert np.all(np.isfinite(flat)) and np.allclose(flat, 0)
  with pytest.raises(ValueError, match="size"):
    pp.local_contrast_normalize(x, size=4)


def test_crops_resize_and_flip():
  x = np.arange(2 * 6 * 8 * 1, dtype=np.uint8).reshape(2, 6, 8, 1)
  np.testing.assert_array_equal(pp.center_crop(x, (2, 4)), x[:, 2:4, 2:6])
  with pytest.raises(ValueError, match="size"):
    pp.center_crop(x, (7, 2))
  rng = np.random.default_rng(1)
  crops = pp.random_crop_and_flip(x, (3, 3), rng)
  assert crops.shape == (2, 3, 3, 1)
  for i in range(2):  # every crop is a (possibly flipped) window of its own image
    windows = [x[i, t:t + 3, l:l + 3] for t in range(4) for l in range(6)]
    assert any(np.array_equal(crops[i], w) or np.array_equal(crops[i], w[:, ::-1]) for w in windows)
  big = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
  small = pp.resize(big, (6, 8))
  assert small.shape == x.shape and small.dtype == np.uint8
  assert np.abs(small.astype(int) - x.astype(int)).max() <= 2  # a 2x nearest-upscaled image resizes back closely


def test_make_transform_composes_in_order():
  x = RNG.integers(0, 256, size=(3, 10, 10, 3), dtype=np.uint8)
  t = pp.make_transform(center_crop_to=(8, 8), gcn=True, mean=[0.0] * 3, std=[2.0] * 3)
  out = t(x, np.random.default_rng(0))
  expected = pp.global_contrast_normalize(x[:, 1:9, 1:9] / 255.0) / 2.0
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  aug = pp.make_transform(random_crop_to=(8, 8), flip=True, crop_padding=1)
  a, b = aug(x, np.random.default_rng(5)), aug(x, np.random.default_rng(5))
  np.testing.assert_array_equal(a, b)  # same rng, same augmentation
  assert a.shape == (3, 8, 8, 3) and a.dtype == np.float32
  with pytest.raises(ValueError, match="crop"):
    pp.make_transform(center_crop_to=(4, 4), random_crop_to=(4, 4))
