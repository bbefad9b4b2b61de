"""Image preprocessing in numpy, batch-wise on `[B, H, W, C]` arrays (the loader runs it in its prefetch thread).

* `to_float`: uint8 -> float32 in [0, 1].
* `normalize(x, mean, std)`: `(x - mean) / std` per channel; `DATASET_STATS` holds the commonly published per-channel
  mean / std of the [0, 1]-scaled training sets; `channel_stats` computes them on any split.
* `global_contrast_normalize` (GCN, S0 CIFAR-10): per image, `x <- scale * (x - mean(x)) / max(min_divisor,
  sqrt(sqrt_bias + mean((x - mean(x))^2)))` over all pixels and channels (the maxout / pylearn2 recipe, scale 55).
* `fit_zca` / `apply_zca` (S0 CIFAR-10): ZCA whitening fit on the training split, `W = U diag(1 / sqrt(lambda + eps)) U^T`
  from the eigendecomposition `U diag(lambda) U^T` of the covariance of the flattened, mean-centred images.
* `local_contrast_normalize` (LCN, S0 SVHN; Jarrett et al. 2009): with a normalized Gaussian window w (size k, sigma),
  `v = x - sum_c w * x_c / C` (subtractive), `sigma = sqrt(sum_c w * v_c^2 / C)`, `y = v / max(mean(sigma), sigma)`
  (divisive). The window is renormalized at the borders (divided by the in-image window mass), so border pixels are not
  pulled toward the zero padding.
* `resize`, `center_crop`, `random_crop_and_flip`, and `make_transform(...)` composing them into the loader's
  `transform(images_uint8, rng) -> float32`.

References:
  Goodfellow, I. et al. (2013). Maxout networks. ICML (GCN scale 55 + ZCA on CIFAR-10; LCN on SVHN).
  Jarrett, K., Kavukcuoglu, K., Ranzato, M. & LeCun, Y. (2009). What is the best multi-stage architecture for object
  recognition? ICCV (local contrast normalization).
  Krizhevsky, A. (2009). Learning multiple layers of features from tiny images (ZCA whitening).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

# Per-channel mean / std of the training sets scaled to [0, 1], as commonly published (torchvision / dataset papers).
DATASET_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    # ImageNet statistics: CUB / Cars / SOP models start from ImageNet-pretrained backbones.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cub200": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cars196": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "sop": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def _check_images(x, name="images"):
  x = np.asarray(x)
  if x.ndim != 4:
    raise ValueError(f"`{name}` must be [B, H, W, C], got shape {x.shape}.")
  return x


def to_float(images) -> np.ndarray:
  """uint8 `[B, H, W, C]` -> float32 in [0, 1]."""
  images = _check_images(images)
  return images.astype(np.float32) * np.float32(1.0 / 255.0)


def channel_stats(images) -> Tuple[np.ndarray, np.ndarray]:
  """Per-channel (mean, std) of uint8 images scaled to [0, 1], over all images and pixels: two `[C]` arrays."""
  images = _check_images(images)
  x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  return x.mean(axis=0), x.std(axis=0)


def normalize(x, mean, std) -> np.ndarray:
  """`(x - mean) / std` per channel; `mean`, `std` broadcast over the last axis (`[C]` or scalars)."""
  mean = np.asarray(mean, dtype=np.float32)
  std = np.asarray(std, dtype=np.float32)
  if np.any(std <= 0):
    raise ValueError(f"`std` must be positive, got {std}.")
  return (np.asarray(x, dtype=np.float32) - mean) / std


def global_contrast_normalize(x, *, scale: float = 55.0, sqrt_bias: float = 0.0, min_divisor: float = 1e-8
                              ) -> np.ndarray:
  """GCN per image: `scale * (x - mean) / max(min_divisor, sqrt(sqrt_bias + mean((x - mean)^2)))`.

  Args:
    x: `[B, H, W, C]` floating (or uint8) images; statistics over H, W, C of each image.
    scale: 55 for CIFAR-10 in the maxout recipe (S0).
    sqrt_bias: added under the square root (0 in the recipe).
    min_divisor: floor of the divisor, so constant images map to 0 instead of NaN.

  Returns:
    float32 `[B, H, W, C]`.
  """
  x = _check_images(x, "x").astype(np.float64)
  centred = x - x.mean(axis=(1, 2, 3), keepdims=True)
  norm = np.sqrt(sqrt_bias + np.mean(centred ** 2, axis=(1, 2, 3), keepdims=True))
  return (scale * centred / np.maximum(norm, min_divisor)).astype(np.float32)


class ZCA(NamedTuple):
  """ZCA whitening fit on a training split: `apply_zca(x) = (flatten(x) - mean) @ matrix`."""
  mean: np.ndarray    # [D]
  matrix: np.ndarray  # [D, D], symmetric


def fit_zca(x, *, eps: float = 1e-2) -> ZCA:
  """Fits ZCA whitening on `x` `[N, H, W, C]` (typically after GCN).

  `C = Xc^T Xc / N` (Xc the centred, flattened images), `C = U diag(lambda) U^T`, `W = U diag(1 / sqrt(lambda + eps)) U^T`.
  `eps` regularizes small eigenvalues (pylearn2's `filter_bias`; 0.1 in the maxout CIFAR recipe on GCN'd data).
  """
  x = _check_images(x, "x")
  if eps < 0:
    raise ValueError(f"`eps` must be non-negative, got {eps}.")
  flat = x.reshape(x.shape[0], -1).astype(np.float64)
  mean = flat.mean(axis=0)
  centred = flat - mean
  cov = centred.T @ centred / flat.shape[0]
  eigvals, eigvecs = np.linalg.eigh(cov)
  eigvals = np.maximum(eigvals, 0.0)
  if eps == 0 and np.any(eigvals <= 0):
    raise ValueError("the covariance is singular; pass `eps` > 0.")
  matrix = (eigvecs / np.sqrt(eigvals + eps)) @ eigvecs.T
  return ZCA(mean.astype(np.float32), matrix.astype(np.float32))


def apply_zca(x, zca: ZCA) -> np.ndarray:
  """Whitens `x` `[B, H, W, C]` with a fitted `ZCA`; float32, same shape."""
  x = _check_images(x, "x")
  flat = x.reshape(x.shape[0], -1).astype(np.float32)
  if flat.shape[1] != zca.mean.shape[0]:
    raise ValueError(f"`x` has {flat.shape[1]} values per image but `zca` was fit on {zca.mean.shape[0]}.")
  return ((flat - zca.mean) @ zca.matrix).reshape(x.shape).astype(np.float32)


def gaussian_window(size: int, sigma: float) -> np.ndarray:
  """Normalized 1-D Gaussian window of odd length `size` (sums to 1)."""
  if size < 1 or size % 2 == 0:
    raise ValueError(f"`size` must be a positive odd integer, got {size}.")
  r = np.arange(size) - size // 2
  w = np.exp(-(r ** 2) / (2.0 * sigma ** 2))
  return w / w.sum()


def _window_mean(x, w):
  """Gaussian-weighted local mean of `x` [B, H, W] with zero padding, renormalized by the in-image window mass."""
  blur = ndimage.correlate1d(ndimage.correlate1d(x, w, axis=1, mode="constant"), w, axis=2, mode="constant")
  ones = np.ones(x.shape[1:], dtype=x.dtype)
  mass = ndimage.correlate1d(ndimage.correlate1d(ones, w, axis=0, mode="constant"), w, axis=1, mode="constant")
  return blur / mass


def local_contrast_normalize(x, *, size: int = 9, sigma: float = 2.0, min_divisor: float = 1e-4) -> np.ndarray:
  """LCN (Jarrett et al. 2009), subtractive then divisive, with a Gaussian window across all channels.

  `v = x - G(mean_c x)`, `s = sqrt(G(mean_c v^2))`, `y = v / max(mean_hw(s), s, min_divisor)` per image, where G is the
  normalized `size x size` Gaussian window (renormalized at the borders).

  Args:
    x: `[B, H, W, C]` images.
    size: window side (odd). sigma: Gaussian standard deviation in pixels.
    min_divisor: floor of the divisor, so flat images give 0, not NaN.

  Returns:
    float32 `[B, H, W, C]`.
  """
  x = _check_images(x, "x").astype(np.float64)
  w = gaussian_window(size, sigma)
  v = x - _window_mean(x.mean(axis=3), w)[..., None]
  s = np.sqrt(_window_mean((v ** 2).mean(axis=3), w))
  divisor = np.maximum(np.maximum(s, s.mean(axis=(1, 2), keepdims=True)), min_divisor)
  return (v / divisor[..., None]).astype(np.float32)


def resize(images, size: Sequence[int]) -> np.ndarray:
  """Bilinear resize (pillow) of uint8 `[B, H, W, C]` to `[B, size[0], size[1], C]`, uint8."""
  images = _check_images(images)
  h, w = int(size[0]), int(size[1])
  if tuple(images.shape[1:3]) == (h, w):
    return images
  out = np.empty((images.shape[0], h, w, images.shape[3]), dtype=np.uint8)
  for i, img in enumerate(images):
    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    r = np.asarray(pil.resize((w, h), Image.BILINEAR))
    out[i] = r[..., None] if r.ndim == 2 else r
  return out


resize_uint8 = resize


def center_crop(images, size: Sequence[int]) -> np.ndarray:
  """Central `size[0] x size[1]` crop of `[B, H, W, C]`."""
  images = _check_images(images)
  h, w = int(size[0]), int(size[1])
  H, W = images.shape[1:3]
  if h > H or w > W:
    raise ValueError(f"`size` {tuple(size)} is larger than the images ({H}, {W}).")
  top, left = (H - h) // 2, (W - w) // 2
  return images[:, top:top + h, left:left + w]


def random_crop_and_flip(images, size: Sequence[int], rng: np.random.Generator, *, flip: bool = True,
                         padding: int = 0) -> np.ndarray:
  """Per-image random `size` crop (after optional zero `padding`) and horizontal flip with probability 1/2."""
  images = _check_images(images)
  if padding:
    images = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  h, w = int(size[0]), int(size[1])
  B, H, W = images.shape[:3]
  if h > H or w > W:
    raise ValueError(f"`size` {tuple(size)} is larger than the (padded) images ({H}, {W}).")
  tops = rng.integers(0, H - h + 1, size=B)
  lefts = rng.integers(0, W - w + 1, size=B)
  flips = rng.random(B) < 0.5 if flip else np.zeros(B, bool)
  out = np.empty((B, h, w, images.shape[3]), dtype=images.dtype)
  for i in range(B):
    crop = images[i, tops[i]:tops[i] + h, lefts[i]:lefts[i] + w]
    out[i] = crop[:, ::-1] if flips[i] else crop
  return out


def make_transform(*, resize_to: Optional[Sequence[int]] = None, center_crop_to: Optional[Sequence[int]] = None,
                   random_crop_to: Optional[Sequence[int]] = None, flip: bool = False, crop_padding: int = 0,
                   gcn: bool = False, gcn_scale: float = 55.0, zca: Optional[ZCA] = None, lcn: bool = False,
                   lcn_size: int = 9, lcn_sigma: float = 2.0, mean=None, std=None):
  """Composes the steps into `transform(images_uint8 [B, H, W, C], rng) -> float32` for `BatchLoader`.

  Order: resize -> centre crop or random crop (+ flip) -> flip alone -> scale to [0, 1] -> GCN -> ZCA -> LCN ->
  normalize(mean, std). Random steps draw from the loader's per-step rng, so they are reproducible on resume.
  """
  if center_crop_to is not None and random_crop_to is not None:
    raise ValueError("pass at most one of `center_crop_to` and `random_crop_to`.")
  if (mean is None) != (std is None):
    raise ValueError("pass both `mean` and `std`, or neither.")

  def transform(images, rng):
    x = _check_images(images)
    if resize_to is not None:
      x = resize(x, resize_to)
    if center_crop_to is not None:
      x = center_crop(x, center_crop_to)
    if random_crop_to is not None:
      x = random_crop_and_flip(x, random_crop_to, rng, flip=flip, padding=crop_padding)
    elif flip:
      flips = rng.random(x.shape[0]) < 0.5
      x = np.where(flips[:, None, None, None], x[:, :, ::-1], x)
    x = to_float(x)
    if gcn:
      x = global_contrast_normalize(x, scale=gcn_scale)
    if zca is not None:
      x = apply_zca(x, zca)
    if lcn:
      x = local_contrast_normalize(x, size=lcn_size, sigma=lcn_sigma)
    if mean is not None:
      x = normalize(x, mean, std)
    return np.asarray(x, dtype=np.float32)

  return transform
