"""The SPMD train step: 1 vs 4 devices, equality with a plain single-device computation on the concatenated batch,
padding, parameter groups (10x new layers, frozen backbone, frozen BatchNorm), learnable S2 alpha, S0 objectives."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from metric_jax import models, train
from tests.train._worker import tiny_loss

SHAPE = (8, 8, 1)
LR = 0.05


def _batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(n // 2), 2).astype(np.int32)
  images = (rng.normal(size=(n,) + SHAPE) + labels[:, None, None, None]).astype(np.float32)
  return {"image": images, "label": labels, "valid": np.ones(n, bool)}


def _np_tiny_loss(emb, labels, valid):
  """numpy reimplementation of tests.train._worker.tiny_loss."""
  emb = np.asarray(emb, np.float64)
  d2 = np.sum((emb[:, None] - emb[None]) ** 2, axis=-1)
  both = valid[:, None] & valid[None, :] & ~np.eye(len(labels), dtype=bool)
  pos = both & (labels[:, None] == labels[None, :])
  neg = both & (labels[:, None] != labels[None, :])
  return d2[pos].mean() - 0.5 * np.minimum(d2[neg], 2.0).mean()


def _resnet_embedder():
  return models.Embedder(models.SmallResNet(SHAPE, widths=(4, 8), rngs=nnx.Rngs(0)), SHAPE, 4,
                         layers=("stage1", "stage2"), rngs=nnx.Rngs(1))


def _lenet_embedder():
  backbone = models.LeNet(SHAPE, None, channels=(3, 4), hidden=6, kernel_size=3, padding="SAME", rngs=nnx.Rngs(0))
  return models.Embedder(backbone, SHAPE, 3, normalize=False, rngs=nnx.Rngs(1))


def _trainer(model, num_devices, objective=None, loss_params=None, **opt):
  _, params, _ = train.split_model(model)
  opt = dict(dict(optimizer="sgd", learning_rate=LR, momentum=0.0), **opt)
  tx = train.make_optimizer({"model": params, "loss": loss_params or {}}, **opt)
  return train.Trainer(model, objective or train.metric_objective(tiny_loss), tx,
                       mesh=train.make_mesh(jax.devices()[:num_devices]), frozen_bn=opt.get("frozen_bn", False))


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(train.Trainer.local_copy(tree)))


def _max_diff(a, b):
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), _host(a), _host(b))))


def test_one_step_on_1_and_4_devices_gives_same_loss_params_and_batchnorm_stats():
  batch = _batch()
  results = {}
  for n in (1, 4):
    trainer = _trainer(_resnet_embedder(), n, optimizer="adam", learning_rate=1e-2)
    state, metrics = trainer.train_step(trainer.init_state(seed=0), trainer.shard_batch(batch))
    results[n] = (state, float(_host(metrics)["loss"]))
  assert results[1][1] == pytest.approx(results[4][1], rel=1e-5, abs=1e-6)
  assert _max_diff(results[1][0].params, results[4][0].params) < 1e-4
  assert _max_diff(results[1][0].model_state, results[4][0].model_state) < 1e-5
  assert _max_diff(results[1][0].opt_state, results[4][0].opt_state) < 1e-4


def test_global_batch_step_equals_single_device_loss_and_sgd_update_with_10x_new_layers():
  batch = _batch()
  model = _lenet_embedder()
  trainer = _trainer(model, 4, new_layer_lr_multiplier=10.0)
  state0 = trainer.init_state(seed=0)
  state1, metrics = trainer.train_step(state0, trainer.shard_batch(batch))

  graphdef, params, rest = train.split_model(model)
  emb = nnx.merge(graphdef, params, rest)(jnp.asarray(batch["image"]))["embedding"]
  expected_loss = _np_tiny_loss(emb, batch["label"], batch["valid"])
  assert float(_host(metrics)["loss"]) == pytest.approx(expected_loss, rel=1e-4)

  def plain_loss(p):  # the whole batch on one device, no shard_map
    e = nnx.merge(graphdef, p, rest)(jnp.asarray(batch["image"]))["embedding"]
    return tiny_loss(e, jnp.asarray(batch["label"]))

  grads = jax.grad(plain_loss)(params)
  new = _host(state1.params)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    scale = 10.0 if path[0].key == "heads" else 1.0
    old = np.asarray(_leaf(params, path))
    np.testing.assert_allclose(_leaf(new, path), old - scale * LR * np.asarray(g), rtol=1e-4, atol=1e-6)
    assert np.abs(np.asarray(g)).max() > 0


def _leaf(tree, path):
  for k in path:
    tree = tree[k.key]
  return tree


def test_padded_rows_change_neither_loss_nor_update():
  batch = _batch()
  padded = {"image": np.concatenate([batch["image"], 100 * np.ones((4,) + SHAPE, np.float32)]),
            "label": np.concatenate([batch["label"], np.zeros(4, np.int32)]),
            "valid": np.concatenate([batch["valid"], np.zeros(4, bool)])}
  trainer = _trainer(_lenet_embedder(), 4)
  state0 = trainer.init_state(seed=0)
  s_ref, m_ref = trainer.train_step(state0, trainer.shard_batch(batch))
  s_pad, m_pad = trainer.train_step(state0, trainer.shard_batch(padded))
  assert float(_host(m_pad)["loss"]) == pytest.approx(float(_host(m_ref)["loss"]), rel=1e-5)
  assert _max_diff(s_ref.params, s_pad.params) < 1e-6
  assert int(_host(m_pad)["num_valid"]) == 8


def test_frozen_backbone_steps_and_frozen_batchnorm_do_not_move():
  trainer = _trainer(_resnet_embedder(), 2, optimizer="adam", learning_rate=1e-2, freeze_backbone_steps=2,
                     frozen_bn=True)
  state0 = trainer.init_state(seed=0)
  p0, s0 = _host(state0.params), _host(state0.model_state)
  state = state0
  snapshots = []
  for step in range(3):
    state, _ = trainer.train_step(state, trainer.shard_batch(_batch(seed=step)))
    snapshots.append(_host(state.params))
  stem, stem_bn = "stem", "stem_bn"
  for snap in snapshots[:2]:  # backbone frozen for steps 0, 1
    np.testing.assert_array_equal(snap["backbone"][stem]["kernel"], p0["backbone"][stem]["kernel"])
    assert not np.array_equal(snap["heads"][0]["linear"]["kernel"], p0["heads"][0]["linear"]["kernel"])
  assert not np.array_equal(snapshots[2]["backbone"][stem]["kernel"], p0["backbone"][stem]["kernel"])
  # frozen BatchNorm: affine parameters and running statistics never change
  np.testing.assert_array_equal(snapshots[2]["backbone"][stem_bn]["scale"], p0["backbone"][stem_bn]["scale"])
  np.testing.assert_array_equal(snapshots[2]["backbone"][stem_bn]["bias"], p0["backbone"][stem_bn]["bias"])
  assert jax.tree.all(jax.tree.map(np.array_equal, _host(state.model_state), s0))


def test_density_adaptivity_alpha_gets_the_hand_derived_gradient_and_moves():
  batch = _batch()
  model = _lenet_embedder()
  num_classes, weight, eta = 4, 10.0, 0.5
  d0 = np.array([0.2, 0.4, 0.8, 1.6], np.float32)
  loss_params = train.init_loss_params(num_classes, density_adaptivity=True)
  objective = train.metric_objective(tiny_loss, density_adaptivity_weight=weight, density_adaptivity_eta=eta)
  trainer = _trainer(model, 4, objective=objective, loss_params=loss_params)
  state0 = trainer.init_state(seed=0, loss_params=loss_params, loss_consts={"d0": d0})
  state1, _ = trainer.train_step(state0, trainer.shard_batch(batch))

  graphdef, params, rest = train.split_model(model)
  emb = np.asarray(nnx.merge(graphdef, params, rest)(jnp.asarray(batch["image"]))["embedding"], np.float64)
  labels = batch["label"]
  dens = np.array([np.mean(np.sum((emb[labels == c] - emb[labels == c].mean(0)) ** 2, 1)) for c in range(4)])
  alpha = np.full(4, 0.5)
  d = d0.astype(np.float64) ** eta
  c = num_classes
  # dL_DA/dalpha_k = -2/C (D_k - alpha_k) - 1/C + 4/C^2 sum_j (d_j alpha_k - d_k alpha_j) d_j
  grad = -2 / c * (dens - alpha) - 1 / c + 4 / c ** 2 * np.array(
      [np.sum((d * alpha[k] - d[k] * alpha) * d) for k in range(c)])
  new_alpha = _host(state1.loss_params)["alpha"]
  np.testing.assert_allclose(new_alpha, alpha - LR * weight * grad, rtol=1e-4, atol=1e-6)
  assert np.all(np.abs(new_alpha - 0.5) > 1e-4)


def test_class_densities_match_hand_computation():
  feats = np.array([[3.0, 4.0], [6.0, 8.0], [0.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
  labels = np.array([0, 0, 1, 1, 2])
  got = train.class_densities(feats, labels, 4, normalize=False)
  # class 0: centroid (4.5, 6), squared distances 6.25 each; class 1: centroid (0, 1.5), 0.25 each; class 2: 0;
  # class 3 has no example: mean of the others.
  np.testing.assert_allclose(got, [6.25, 0.25, 0.0, (6.25 + 0.25) / 3], rtol=1e-6)
  normed = train.class_densities(feats, labels, 3)  # class 0's rows coincide after L2 normalization
  assert normed[0] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("kind", train.PAIR_KINDS)
def test_pair_objectives_match_numpy(kind):
  rng = np.random.default_rng(5)
  p, margin, b, lam = 6, 1.0, 0.4, 0.7
  trunk = models.LeNet(SHAPE, None, channels=(2, 2), hidden=5, kernel_size=3, padding="SAME", rngs=nnx.Rngs(0))
  net = models.TwoChannelNet(trunk, SHAPE, 3, rngs=nnx.Rngs(1))
  feats = rng.normal(size=(2 * p, 2)).astype(np.float32) * 0.6
  cls_in = rng.normal(size=(2 * p, 5)).astype(np.float32)
  labels = np.array([0, 1, 2, 0, 1, 2, 0, 2, 2, 1, 1, 0], np.int32)
  valid = np.ones(2 * p, bool)
  valid[3] = False  # drops pair 3
  objective = train.pair_objective(kind, margin=margin, b=b, lam=lam)
  loss, _ = objective(net, {"features": jnp.asarray(feats), "classifier_inputs": jnp.asarray(cls_in)},
                      jnp.asarray(labels), jnp.asarray(valid), {}, {})

  w1, b1 = np.asarray(net.w1.kernel), np.asarray(net.w1.bias)
  w2, b2 = np.asarray(net.w2.kernel), np.asarray(net.w2.bias)

  def ce(logits, y):
    logits = logits - logits.max(1, keepdims=True)
    return -(logits[np.arange(len(y)), y] - np.log(np.exp(logits).sum(1)))

  pv = valid[:p] & valid[p:]
  y = np.where(labels[:p] == labels[p:], 1.0, -1.0)
  d2 = np.sum((feats[:p] - feats[p:]) ** 2, 1)
  bb = margin if kind == "siamese" else b
  ploss = np.maximum(0, bb - y * (margin - d2))[pv].mean()
  closs = (ce(cls_in[:p] @ w1 + b1, labels[:p]) + ce(cls_in[p:] @ w2 + b2, labels[p:]))[pv].mean()
  expected = {"siamese": ploss, "pairloss": ploss, "pair_soft": closs + lam * ploss, "pairnet": closs + lam * ploss,
              "singlenet": ce(cls_in @ w1 + b1, labels)[valid].mean()}[kind]
  if kind == "siamese":  # contrastive: same pairs D^2, different pairs max(0, 2m - D^2)
    alt = np.where(y > 0, d2, np.maximum(0, 2 * margin - d2))[pv].mean()
    assert expected == pytest.approx(alt)
  assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_bad_objective_and_optimizer_arguments_name_the_argument():
  with pytest.raises(ValueError, match="kind"):
    train.pair_objective("triplet")
  with pytest.raises(ValueError, match="`b`"):
    train.pair_objective("pairnet", margin=1.0, b=2.0)
  with pytest.raises(ValueError, match="density_adaptivity_weight"):
    train.metric_objective(tiny_loss, density_adaptivity_weight=-1.0)
  with pytest.raises(ValueError, match="optimizer"):
    train.make_optimizer({"model": {}, "loss": {}}, optimizer="lion")
  with pytest.raises(ValueError, match="freeze_backbone_steps"):
    train.make_optimizer({"model": {}, "loss": {}}, freeze_backbone_steps=-1)
  with pytest.raises(ValueError, match="mesh"):
    from jax.sharding import Mesh
    train.Trainer(_lenet_embedder(), train.metric_objective(tiny_loss), optax.sgd(0.1),
                  mesh=Mesh(np.array(jax.devices()[:2]), ("data",)))


# ------------------------------------------------------------------------------ row-sharded objectives (issue 11)
def _plain_sgd(model, loss_of_embeddings, batch, scale_of=lambda path: 1.0):
  """`(loss, new params)` of one SGD step computed without shard_map on the concatenated batch."""
  graphdef, params, rest = train.split_model(model)

  def plain_loss(p):
    return loss_of_embeddings(nnx.merge(graphdef, p, rest)(jnp.asarray(batch["image"])))

  loss, grads = jax.value_and_grad(plain_loss)(params)
  return float(loss), jax.tree.map(lambda p, g: np.asarray(p) - LR * np.asarray(g), params, grads)


def test_registry_loss_with_density_adaptivity_runs_row_sharded_and_equals_the_plain_step():
  """The step calls the objective on each device's local rows with `axis_name`: the loss builds its [b, G] rows and
  the class statistics of DML-DA are combined over the axis. Loss and update equal the plain step (no shard_map) on the
  concatenated batch, on 4 devices as on 1."""
  from metric_jax import losses, regularizers
  batch = _batch()
  d0 = np.array([0.2, 0.4, 0.8, 1.6], np.float32)
  loss_params = train.init_loss_params(4, density_adaptivity=True)
  objective = train.metric_objective("multi_similarity", density_adaptivity_weight=10.0)

  def reference(outputs):
    emb, labels = outputs["embedding"], jnp.asarray(batch["label"])
    return (losses.get("multi_similarity")(emb, labels)
            + 10.0 * regularizers.density_adaptivity(emb, labels, loss_params["alpha"], d0))

  model = _lenet_embedder()
  expected_loss, expected_params = _plain_sgd(model, reference, batch)
  for n in (1, 4):
    trainer = _trainer(_lenet_embedder(), n, objective=objective, loss_params=loss_params)
    assert trainer.sharded_objective
    state, metrics = trainer.train_step(trainer.init_state(seed=0, loss_params=loss_params, loss_consts={"d0": d0}),
                                        trainer.shard_batch(batch))
    assert float(_host(metrics)["loss"]) == pytest.approx(expected_loss, rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), _host(state.params),
                 expected_params)


@pytest.mark.parametrize("kind", ["pairnet", "singlenet"])
def test_pair_objective_step_is_exact_when_the_pair_halves_live_on_different_devices(kind):
  """S0: pair i is (row i, row i + P) of the global batch; on 4 devices the halves are on different devices. The
  objective reads the partners' features from the gathered [G, F] features and applies W1 / W2 by global row."""
  rng = np.random.default_rng(3)
  p = 4
  labels = np.array([0, 1, 2, 0, 0, 2, 1, 1], np.int32)
  batch = {"image": rng.normal(size=(2 * p,) + SHAPE).astype(np.float32), "label": labels,
           "valid": np.array([1, 1, 1, 1, 1, 0, 1, 1], bool)}

  def net():
    trunk = models.LeNet(SHAPE, None, channels=(2, 2), hidden=5, kernel_size=3, padding="SAME", rngs=nnx.Rngs(0))
    return models.TwoChannelNet(trunk, SHAPE, 3, rngs=nnx.Rngs(1))

  objective = train.pair_objective(kind, margin=1.0, b=0.4, lam=0.7)
  model = net()
  graphdef, params, rest = train.split_model(model)

  def plain_loss(params):
    m = nnx.merge(graphdef, params, rest)
    return objective(m, m(jnp.asarray(batch["image"]), train=True), jnp.asarray(labels),
                     jnp.asarray(batch["valid"]), {}, {})[0]

  expected_loss, grads = jax.value_and_grad(plain_loss)(params)
  for n in (1, 4):
    trainer = _trainer(net(), n, objective=objective)
    state, metrics = trainer.train_step(trainer.init_state(seed=0), trainer.shard_batch(batch))
    assert float(_host(metrics)["loss"]) == pytest.approx(float(expected_loss), rel=1e-5)
    jax.tree.map(lambda new, old, g: np.testing.assert_allclose(new, np.asarray(old) - LR * np.asarray(g), rtol=1e-4,
                                                                atol=1e-6),
                 _host(state.params), params, grads)


# ------------------------------------------------------------------------------- cross-batch memory (issue 11)
def _memory_trainer(num_devices, memory_size, memory_start_step=0, loss="contrastive"):
  model = _lenet_embedder()
  _, params, _ = train.split_model(model)
  tx = train.make_optimizer({"model": params, "loss": {}}, optimizer="sgd", learning_rate=LR, momentum=0.0)
  return train.Trainer(model, train.metric_objective(loss), tx, mesh=train.make_mesh(jax.devices()[:num_devices]),
                       memory_size=memory_size, memory_start_step=memory_start_step)


def _embed(trainer, state, batch):
  return np.asarray(trainer.embed_fn(state)(batch["image"]))


def test_memory_size_0_is_no_memory_and_an_unused_memory_changes_nothing():
  batches = [_batch(seed=s) for s in range(3)]
  default = train.Trainer(_lenet_embedder(), train.metric_objective("contrastive"), _memory_trainer(4, 0).optimizer,
                          mesh=train.make_mesh(jax.devices()[:4]))   # no memory argument at all
  plain, unused = _memory_trainer(4, 0), _memory_trainer(4, 12, memory_start_step=100)
  s_default, s_plain, s_unused = default.init_state(seed=0), plain.init_state(seed=0), unused.init_state(seed=0)
  assert s_plain.memory == {} and "memory" not in str(jax.tree_util.tree_structure(s_plain))
  assert jax.tree_util.tree_structure(s_plain) == jax.tree_util.tree_structure(s_default)
  for batch in batches:
    s_default, m_default = default.train_step(s_default, default.shard_batch(batch))
    s_plain, m_plain = plain.train_step(s_plain, plain.shard_batch(batch))
    s_unused, m_unused = unused.train_step(s_unused, unused.shard_batch(batch))
    assert float(_host(m_plain)["loss"]) == float(_host(m_default)["loss"])       # size 0: the same computation
    assert "memory_used" not in _host(m_plain)
    # The invalid memory keys take no part; they only change the order of the float sums (a few ulp).
    assert float(_host(m_unused)["loss"]) == pytest.approx(float(_host(m_plain)["loss"]), rel=1e-6)
    assert int(_host(m_unused)["memory_used"]) == 0
  assert _max_diff(s_plain.params, s_default.params) == 0.0
  assert _max_diff(s_plain.params, s_unused.params) < 1e-6


def test_memory_buffer_fills_and_wraps_in_order():
  trainer = _memory_trainer(4, 12, memory_start_step=100)   # written every step, never read here
  state = trainer.init_state(seed=0)
  memory = _host(state.memory)
  assert memory["embeddings"].shape == (12, 3) and not memory["valid"].any() and int(memory["next"]) == 0
  batches = [_batch(seed=s) for s in range(3)]
  batches[1]["valid"][6] = False
  # 8 rows per step into 12 slots: step 0 -> slots 0-7, step 1 -> 8-11 then 0-3, step 2 -> 4-11 (the oldest entries
  # are overwritten: after step 2 the buffer holds step 1's last 4 rows in slots 0-3 and step 2's rows in 4-11).
  expected_slots = [np.arange(8), np.r_[8:12, 0:4], np.arange(4, 12)]
  written = []
  for step, batch in enumerate(batches):
    written.append((_embed(trainer, state, batch), batch["label"], batch["valid"]))
    state, _ = trainer.train_step(state, trainer.shard_batch(batch))
    memory = _host(state.memory)
    emb, labels, valid = written[step]
    slots = expected_slots[step]
    np.testing.assert_allclose(memory["embeddings"][slots], emb, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(memory["labels"][slots], labels)
    np.testing.assert_array_equal(memory["valid"][slots], valid)
    assert int(memory["next"]) == 8 * (step + 1) % 12
    assert memory["valid"].sum() == [8, 11, 11][step]   # batch 1's row 6 (slot 2) is padding
  # the final buffer, in slot order: step 1's rows 4-7, then step 2's rows 0-7
  np.testing.assert_allclose(memory["embeddings"], np.concatenate([written[1][0][4:], written[2][0]]), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_array_equal(memory["valid"], np.concatenate([written[1][2][4:], written[2][2]]))


@pytest.mark.parametrize("num_devices", [1, 4])
def test_step_loss_with_memory_is_the_matrix_form_on_the_batch_plus_memory_keys(num_devices):
  from metric_jax import pairwise
  from metric_jax.losses import contrastive
  trainer = _memory_trainer(num_devices, 12)
  state = trainer.init_state(seed=0)
  state, _ = trainer.train_step(state, trainer.shard_batch(_batch(seed=0)))     # fills 8 of the 12 slots
  batch = _batch(seed=1)
  memory = _host(state.memory)
  emb = _embed(trainer, state, batch)
  keys = np.concatenate([emb, memory["embeddings"]])
  expected = contrastive.contrastive_loss(
      pairwise.euclidean(jnp.asarray(emb), jnp.asarray(keys)), batch["label"],
      np.concatenate([batch["label"], memory["labels"]]), key_valid=np.concatenate([batch["valid"], memory["valid"]]),
      self_offset=0)
  _, metrics = trainer.train_step(state, trainer.shard_batch(batch))
  assert int(_host(metrics)["memory_used"]) == 8
  assert float(_host(metrics)["loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_memory_needs_an_objective_that_takes_it():
  model = _lenet_embedder()
  with pytest.raises(ValueError, match="memory"):
    train.Trainer(model, train.metric_objective(tiny_loss), optax.sgd(0.1), memory_size=4)
  with pytest.raises(ValueError, match="memory"):   # its keys are the class parameters
    train.Trainer(model, train.metric_objective("proxy_anchor"), optax.sgd(0.1), memory_size=4)
  with pytest.raises(ValueError, match="memory"):
    train.Trainer(model, train.pair_objective("pairnet"), optax.sgd(0.1), memory_size=4)
  with pytest.raises(ValueError, match="memory_size"):
    train.Trainer(model, train.metric_objective("contrastive"), optax.sgd(0.1), memory_size=-1)
