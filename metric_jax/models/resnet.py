"""A small ResNet for 28-64 px inputs, with BatchNorm whose batch statistics are synchronised across devices.

stem: conv 3x3 (width w0) - BN - ReLU; then `len(widths)` stages of `blocks_per_stage` basic blocks
(conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU), the first block of every stage after the first with stride 2 and a 1x1
conv-BN projection shortcut. Outputs a dict of named layers: `stem`, `stage1..stageN` (`[B, h, w, c]`) and `pool`
(global average pool of the last stage, `[B, widths[-1]]`).

BatchNorm: `axis_name` (default `"batch"`, the training step's mesh axis) makes training-mode statistics the mean and
mean-of-squares averaged (`pmean`) over all devices, so one step on n devices equals one step on the whole batch. Call with
`train=False` (running statistics, nothing updated) outside the SPMD step, or for frozen BatchNorm during training.

References:
  K. He, X. Zhang, S. Ren, J. Sun. Deep residual learning for image recognition. CVPR 2016.
  S. Ioffe, C. Szegedy. Batch normalization. ICML 2015.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from metric_jax.models.convnets import _check_images


def _bn(features, axis_name, momentum, rngs, dtype=None):
  return nnx.BatchNorm(features, momentum=momentum, epsilon=1e-5, axis_name=axis_name, dtype=dtype, rngs=rngs)


class BasicBlock(nnx.Module):
  """conv3x3(stride) - BN - ReLU - conv3x3 - BN, plus identity or 1x1-conv-BN shortcut, then ReLU."""

  def __init__(self, in_features: int, out_features: int, stride: int, *, axis_name, momentum, dtype=None,
               rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(in_features, out_features, (3, 3), strides=stride, padding="SAME", use_bias=False,
                          dtype=dtype, rngs=rngs)
    self.bn1 = _bn(out_features, axis_name, momentum, rngs, dtype)
    self.conv2 = nnx.Conv(out_features, out_features, (3, 3), padding="SAME", use_bias=False, dtype=dtype,
                          rngs=rngs)
    self.bn2 = _bn(out_features, axis_name, momentum, rngs, dtype)
    if stride != 1 or in_features != out_features:
      self.proj = nnx.Conv(in_features, out_features, (1, 1), strides=stride, use_bias=False, dtype=dtype,
                           rngs=rngs)
      self.proj_bn = _bn(out_features, axis_name, momentum, rngs, dtype)
    else:
      self.proj = None
      self.proj_bn = None

  def __call__(self, x, *, train: bool):
    ura = not train
    y = nnx.relu(self.bn1(self.conv1(x), use_running_average=ura))
    y = self.bn2(self.conv2(y), use_running_average=ura)
    shortcut = x if self.proj is None else self.proj_bn(self.proj(x), use_running_average=ura)
    return nnx.relu(y + shortcut)


class SmallResNet(nnx.Module):
  """Small ResNet (default widths 32-64-128, one basic block per stage: a ResNet-8) for 28-64 px images.

  Args:
    input_shape: `(H, W, C)`.
    widths: channels per stage; the stem has `widths[0]` channels.
    blocks_per_stage: basic blocks per stage.
    axis_name: mesh axis over which BatchNorm statistics are averaged in training mode (None: this device only).
    bn_momentum: running-statistics momentum (flax convention: new = m * old + (1 - m) * batch), default 0.9.
    dtype: computation dtype (e.g. `jnp.bfloat16`); parameters and BatchNorm statistics stay float32.
  """

  def __init__(self, input_shape: Sequence[int], *, widths: Sequence[int] = (32, 64, 128), blocks_per_stage: int = 1,
               axis_name: Optional[str] = "batch", bn_momentum: float = 0.9, dtype=None, rngs: nnx.Rngs):
    c = input_shape[-1]
    self.stem = nnx.Conv(c, widths[0], (3, 3), padding="SAME", use_bias=False, dtype=dtype, rngs=rngs)
    self.stem_bn = _bn(widths[0], axis_name, bn_momentum, rngs, dtype)
    blocks = []
    in_features = widths[0]
    for s, width in enumerate(widths):
      stage = []
      for b in range(blocks_per_stage):
        stride = 2 if (s > 0 and b == 0) else 1
        stage.append(BasicBlock(in_features, width, stride, axis_name=axis_name, momentum=bn_momentum, dtype=dtype,
                                rngs=rngs))
        in_features = width
      blocks.append(nnx.List(stage))
    self.stages = nnx.List(blocks)
    self.out_name = "pool"
    self.out_features = widths[-1]

  def __call__(self, images, *, train: bool = False) -> Dict[str, jax.Array]:
    _check_images(images)
    out = {}
    x = out["stem"] = nnx.relu(self.stem_bn(self.stem(images), use_running_average=not train))
    for s, stage in enumerate(self.stages):
      for block in stage:
        x = block(x, train=train)
      out[f"stage{s + 1}"] = x
    out["pool"] = jnp.mean(x, axis=(1, 2))
    return out
