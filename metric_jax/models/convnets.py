"""The S0 (PairNet) networks: LeNet for MNIST, the SVHN net and the CIFAR-10 net.

Every network maps images `[B, H, W, C]` to a dict of named layer outputs (`[B, h, w, c]` for conv layers, `[B, F]` for
fully connected ones, in forward order) so that a pairwise loss can be attached to any layer k; `out_name` is the last
layer, whose output `[B, num_outputs]` is the network's feature vector. No BatchNorm in these nets (the paper's nets have
none), so `train` has no effect and is accepted for a uniform call signature. `dtype` is the computation dtype
(e.g. `jnp.bfloat16` for mixed precision); parameters stay float32.

References:
  Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to document recognition. Proc. IEEE 1998.
  (S0) PairNet: a classification network trained with a local distribution (pairwise) constraint; LeNet for MNIST
  (2 conv + 2x2 max-pool each, 2 FC), SVHN net (3 conv each followed by max-pool and ReLU, 2 FC), CIFAR-10 net
  (4 conv + 1 FC, the first three conv followed by max-pool).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def _pool(x):
  return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")


def _conv_out(size: int, kernel: int, padding: str) -> int:
  return size if padding == "SAME" else size - kernel + 1


def _check_images(images, name="images"):
  if images.ndim != 4:
    raise ValueError(f"`{name}` must be [B, H, W, C], got shape {images.shape}.")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(f"`{name}` must be floating point (convert uint8 with metric_jax.data.preprocessing), "
                    f"got dtype {images.dtype}.")


class LeNet(nnx.Module):
  """LeNet: conv(5x5, 20) - maxpool 2x2 - conv(5x5, 50) - maxpool 2x2 - fc(500) - ReLU - fc(num_outputs).

  Layers: `conv1`, `conv2` (after pooling), `fc1` (after ReLU), `fc2` (`[B, num_outputs]`, linear; left out when
  `num_outputs` is None, e.g. as the trunk of `TwoChannelNet`, whose classifiers W1 and W2 play its part). With
  `padding="VALID"` (the paper, 28x28 MNIST -> 4x4x50); `"SAME"` lets it run on small images such as 8x8 digits.

  Args:
    input_shape: `(H, W, C)` of the images.
    num_outputs: width of `fc2` (10 for MNIST classes; 2 for the paper's 2-D feature plots).
    channels: conv widths, default `(20, 50)`; hidden: width of `fc1`, default 500.
  """

  def __init__(self, input_shape: Sequence[int], num_outputs: Optional[int] = 10, *, channels=(20, 50),
               hidden: int = 500, kernel_size: int = 5, padding: str = "VALID", dtype=None, rngs: nnx.Rngs):
    h, w, c = input_shape
    self.padding = padding
    self.conv1 = nnx.Conv(c, channels[0], (kernel_size, kernel_size), padding=padding, dtype=dtype, rngs=rngs)
    h, w = _conv_out(h, kernel_size, padding) // 2, _conv_out(w, kernel_size, padding) // 2
    self.conv2 = nnx.Conv(channels[0], channels[1], (kernel_size, kernel_size), padding=padding, dtype=dtype,
                          rngs=rngs)
    h, w = _conv_out(h, kernel_size, padding) // 2, _conv_out(w, kernel_size, padding) // 2
    if h < 1 or w < 1:
      raise ValueError(f"`input_shape` {tuple(input_shape)} is too small for LeNet with padding={padding!r}.")
    self.fc1 = nnx.Linear(h * w * channels[1], hidden, dtype=dtype, rngs=rngs)
    if num_outputs is None:
      self.fc2 = None
      self.out_name, self.out_features = "fc1", hidden
    else:
      self.fc2 = nnx.Linear(hidden, num_outputs, dtype=dtype, rngs=rngs)
      self.out_name, self.out_features = "fc2", num_outputs

  def __call__(self, images, *, train: bool = False) -> Dict[str, jax.Array]:
    del train
    _check_images(images)
    out = {}
    x = out["conv1"] = _pool(self.conv1(images))
    x = out["conv2"] = _pool(self.conv2(x))
    x = out["fc1"] = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
    if self.fc2 is not None:
      out["fc2"] = self.fc2(x)
    return out


class SVHNNet(nnx.Module):
  """SVHN net: 3 x [conv(5x5, SAME) - maxpool 2x2 - ReLU], fc(hidden) - ReLU - fc(num_outputs).

  Layers `conv1..conv3`, `fc1`, `fc2`. Inputs are 28x28 centre crops after local contrast normalization (S0).
  """

  def __init__(self, input_shape: Sequence[int], num_outputs: int = 10, *, channels=(32, 32, 64), hidden: int = 64,
               dtype=None, rngs: nnx.Rngs):
    h, w, c = input_shape
    convs = []
    for width in channels:
      convs.append(nnx.Conv(c, width, (5, 5), padding="SAME", dtype=dtype, rngs=rngs))
      c, h, w = width, h // 2, w // 2
    if h < 1 or w < 1:
      raise ValueError(f"`input_shape` {tuple(input_shape)} is too small for SVHNNet.")
    self.convs = nnx.List(convs)
    self.fc1 = nnx.Linear(h * w * c, hidden, dtype=dtype, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, num_outputs, dtype=dtype, rngs=rngs)
    self.out_name = "fc2"
    self.out_features = num_outputs

  def __call__(self, images, *, train: bool = False) -> Dict[str, jax.Array]:
    del train
    _check_images(images)
    out = {}
    x = images
    for i, conv in enumerate(self.convs):
      x = out[f"conv{i + 1}"] = nnx.relu(_pool(conv(x)))
    x = out["fc1"] = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
    out["fc2"] = self.fc2(x)
    return out


class CifarNet(nnx.Module):
  """CIFAR-10 net: conv1..conv3 (5x5, SAME, ReLU) each followed by maxpool 2x2, conv4 (3x3, SAME, ReLU), fc(num_outputs).

  Layers `conv1..conv4`, `fc`. Inputs are globally contrast-normalized and ZCA-whitened (S0).
  """

  def __init__(self, input_shape: Sequence[int], num_outputs: int = 10, *, channels=(32, 32, 64, 64),
               dtype=None, rngs: nnx.Rngs):
    h, w, c = input_shape
    convs = []
    for i, width in enumerate(channels):
      k = 5 if i < 3 else 3
      convs.append(nnx.Conv(c, width, (k, k), padding="SAME", dtype=dtype, rngs=rngs))
      c = width
      if i < 3:
        h, w = h // 2, w // 2
    if h < 1 or w < 1:
      raise ValueError(f"`input_shape` {tuple(input_shape)} is too small for CifarNet.")
    self.convs = nnx.List(convs)
    self.fc = nnx.Linear(h * w * c, num_outputs, dtype=dtype, rngs=rngs)
    self.out_name = "fc"
    self.out_features = num_outputs

  def __call__(self, images, *, train: bool = False) -> Dict[str, jax.Array]:
    del train
    _check_images(images)
    out = {}
    x = images
    for i, conv in enumerate(self.convs):
      x = nnx.relu(conv(x))
      if i < 3:
        x = _pool(x)
      out[f"conv{i + 1}"] = x
    out["fc"] = self.fc(x.reshape(x.shape[0], -1))
    return out
