"""Flax NNX networks: the S0 convnets, a small ResNet, embedding heads / multi-level fusion, the two-channel PairNet.

Every network is called as `model(images [B, H, W, C] float32, *, train: bool)` and returns a dict of per-example arrays:
backbones return their named layers; `Embedder` and `TwoChannelNet` return `embedding` (and what their objectives need).
"""

from metric_jax.models.convnets import CifarNet, LeNet, SVHNNet
from metric_jax.models.heads import EmbeddingHead, Embedder, pool_features
from metric_jax.models.resnet import BasicBlock, SmallResNet
from metric_jax.models.two_channel import TwoChannelNet

__all__ = ["LeNet", "SVHNNet", "CifarNet", "SmallResNet", "BasicBlock", "EmbeddingHead", "Embedder", "pool_features",
           "TwoChannelNet"]
