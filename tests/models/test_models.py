"""Models: layer shapes from hand computation, heads / fusion against numpy, synchronised and frozen BatchNorm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from metric_jax import models
from metric_jax.train import make_mesh


def _shapes(out):
  return {k: tuple(v.shape) for k, v in out.items()}


def test_lenet_layer_shapes_match_the_paper_on_28x28():
  # 28 -5+1-> 24 -pool-> 12 -5+1-> 8 -pool-> 4: 4*4*50 = 800 inputs to fc1 (500).
  net = models.LeNet((28, 28, 1), 10, rngs=nnx.Rngs(0))
  out = net(jnp.zeros((2, 28, 28, 1)))
  assert _shapes(out) == {"conv1": (2, 12, 12, 20), "conv2": (2, 4, 4, 50), "fc1": (2, 500), "fc2": (2, 10)}
  assert net.fc1.kernel.shape == (800, 500)


def test_svhn_and_cifar_nets_layer_shapes():
  svhn = models.SVHNNet((28, 28, 3), 10, rngs=nnx.Rngs(0))
  assert _shapes(svhn(jnp.zeros((2, 28, 28, 3)))) == {
      "conv1": (2, 14, 14, 32), "conv2": (2, 7, 7, 32), "conv3": (2, 3, 3, 64), "fc1": (2, 64), "fc2": (2, 10)}
  cifar = models.CifarNet((32, 32, 3), 10, rngs=nnx.Rngs(0))
  assert _shapes(cifar(jnp.zeros((2, 32, 32, 3)))) == {
      "conv1": (2, 16, 16, 32), "conv2": (2, 8, 8, 32), "conv3": (2, 4, 4, 64), "conv4": (2, 4, 4, 64), "fc": (2, 10)}


def test_lenet_forward_matches_numpy_reimplementation():
  net = models.LeNet((8, 8, 1), 3, channels=(2, 3), hidden=4, kernel_size=3, padding="SAME", rngs=nnx.Rngs(0))
  x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)

  def conv_same(x, k, b):  # cross-correlation with zero padding, HWIO kernel
    kh, kw = k.shape[:2]
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros(x.shape[:3] + (k.shape[3],))
    for i in range(x.shape[1]):
      for j in range(x.shape[2]):
        out[:, i, j] = np.einsum("bhwc,hwco->bo", xp[:, i:i + kh, j:j + kw], k)
    return out + b

  def pool(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

  h = pool(conv_same(x, np.asarray(net.conv1.kernel), np.asarray(net.conv1.bias)))
  h = pool(conv_same(h, np.asarray(net.conv2.kernel), np.asarray(net.conv2.bias)))
  h = np.maximum(h.reshape(2, -1) @ np.asarray(net.fc1.kernel) + np.asarray(net.fc1.bias), 0)
  ref = h @ np.asarray(net.fc2.kernel) + np.asarray(net.fc2.bias)
  np.testing.assert_allclose(np.asarray(net(jnp.asarray(x))["fc2"]), ref, rtol=1e-4, atol=1e-5)


def test_multi_level_fusion_concatenates_pooled_heads_and_normalizes():
  net = models.SmallResNet((8, 8, 1), widths=(4, 8), axis_name=None, rngs=nnx.Rngs(0))
  emb = models.Embedder(net, (8, 8, 1), 6, layers=("stage1", "stage2"), normalize=True, rngs=nnx.Rngs(1))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 8, 8, 1)), jnp.float32)
  out = emb(x)
  layers = net(x)
  parts = []
  for head, name in zip(emb.heads, ("stage1", "stage2")):
    pooled = np.asarray(layers[name]).mean(axis=(1, 2))
    parts.append(pooled @ np.asarray(head.linear.kernel) + np.asarray(head.linear.bias))
  z = np.concatenate(parts, axis=1)
  np.testing.assert_allclose(np.asarray(out["embedding"]), z / np.linalg.norm(z, axis=1, keepdims=True),
                             rtol=1e-4, atol=1e-5)
  assert out["embedding"].shape == (3, 6) and out["features"].shape == (3, 4 + 8)


def test_synchronised_batchnorm_over_4_devices_equals_whole_batch_statistics():
  x = np.random.default_rng(2).normal(size=(8, 8, 8, 1)).astype(np.float32) * 3 + 1
  synced = models.SmallResNet((8, 8, 1), widths=(4,), axis_name="batch", rngs=nnx.Rngs(0))
  local = models.SmallResNet((8, 8, 1), widths=(4,), axis_name=None, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(synced)

  def shard_fn(state, x):
    model = nnx.merge(graphdef, state)
    y = model(x, train=True)["stage1"]
    return y, nnx.state(model)

  mesh = make_mesh(jax.devices()[:4])
  fn = jax.jit(jax.shard_map(shard_fn, mesh=mesh, in_specs=(P(), P("batch")), out_specs=(P("batch"), P()),
                             check_vma=False))
  y_sync, new_state = fn(state, x)
  y_ref = local(jnp.asarray(x), train=True)["stage1"]
  np.testing.assert_allclose(np.asarray(y_sync), np.asarray(y_ref), rtol=1e-4, atol=1e-4)
  # running mean after one step: momentum * 0 + (1 - momentum) * whole-batch mean of the stem conv output
  conv = np.asarray(local.stem(jnp.asarray(x)))
  expected = (1 - 0.9) * conv.mean(axis=(0, 1, 2))
  np.testing.assert_allclose(np.asarray(new_state["stem_bn"]["mean"][...]), expected, rtol=1e-4, atol=1e-5)


def test_inference_mode_uses_running_statistics_and_updates_nothing():
  net = models.SmallResNet((8, 8, 1), widths=(4,), axis_name=None, rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 8, 8, 1)), jnp.float32)
  before = jax.tree.map(np.asarray, nnx.state(net, nnx.BatchStat))
  a = net(x, train=False)["pool"]
  b = net(x[:1], train=False)["pool"]  # row 0 does not depend on the other rows
  np.testing.assert_allclose(np.asarray(a[:1]), np.asarray(b), rtol=1e-5, atol=1e-6)
  after = jax.tree.map(np.asarray, nnx.state(net, nnx.BatchStat))
  assert jax.tree.all(jax.tree.map(np.array_equal, before, after))


def test_two_channel_net_shares_the_trunk_and_has_separate_classifiers():
  trunk = models.LeNet((8, 8, 1), None, channels=(2, 3), hidden=5, kernel_size=3, padding="SAME", rngs=nnx.Rngs(0))
  net = models.TwoChannelNet(trunk, (8, 8, 1), 4, feature_layer="conv2", rngs=nnx.Rngs(1))
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 8, 8, 1)), jnp.float32)
  out = net(x)
  assert out["features"].shape == (2, 2 * 2 * 3)  # conv2 after two 2x2 pools of 8x8, flattened
  np.testing.assert_allclose(np.asarray(out["features"]), np.asarray(trunk(x)["conv2"]).reshape(2, -1))
  assert net.w1 is not net.w2
  assert not np.allclose(np.asarray(net.logits(out["classifier_inputs"], 0)),
                         np.asarray(net.logits(out["classifier_inputs"], 1)))


def test_bad_arguments_name_the_argument():
  net = models.LeNet((28, 28, 1), rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match="images"):
    net(jnp.zeros((1, 28, 28, 1), jnp.uint8))
  with pytest.raises(ValueError, match="input_shape"):
    models.LeNet((8, 8, 1), rngs=nnx.Rngs(0))  # VALID 5x5 convs do not fit 8x8
  with pytest.raises(ValueError, match="layers"):
    models.Embedder(net, (28, 28, 1), 8, layers=("nope",), rngs=nnx.Rngs(0))
  trunk = models.LeNet((28, 28, 1), None, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="feature_layer"):
    models.TwoChannelNet(trunk, (28, 28, 1), 10, feature_layer="fc9", rngs=nnx.Rngs(0))
