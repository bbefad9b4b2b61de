"""Subprocess worker of `test_sharded.py`: a few losses row-sharded over 2 processes x 2 CPU devices (gloo).

  python -m tests.losses._sharded_worker host:port process_id

Each process builds the same global batch, feeds its half, runs value-and-gradient of each loss inside `jax.shard_map`
over the 4 devices (`axis_name`), gathers the outputs and compares them with the unsharded loss computed locally. Prints
"checked 5 losses" and exits 0 when all agree.
"""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

G, D, C = 16, 6, 5
LOSSES = (("contrastive", {}), ("lifted_structure", {}), ("npair_mc", {"symmetric": True}), ("histogram", {}),
          ("proxy_anchor", {}))


def main(argv=None):
  coordinator, process_id = (argv or sys.argv[1:])[:2]
  import jax
  jax.config.update("jax_num_cpu_devices", 2)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=2, process_id=int(process_id))
  import jax.numpy as jnp
  import numpy as np
  from jax.experimental import multihost_utils
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from metric_jax import losses

  rng = np.random.default_rng(0)
  e = (rng.normal(size=(G, D)) / np.sqrt(D)).astype(np.float32)
  y = rng.permutation(np.arange(G) % C).astype(np.int32)
  valid = np.ones(G, bool)
  valid[[2, 11]] = False
  mesh = Mesh(np.array(jax.devices()), ("i",))
  rows = NamedSharding(mesh, P("i"))
  half = slice(jax.process_index() * G // 2, (jax.process_index() + 1) * G // 2)
  glob = lambda x: jax.make_array_from_process_local_data(rows, x[half], x.shape)
  for name, hparams in LOSSES:
    fn = losses.get(name)
    params = (losses.init_params(name, jax.random.PRNGKey(1), num_classes=C, embedding_dim=D)
              if losses.has_params(name) else None)
    kw = lambda p: {"params": p} if p is not None else {}

    def local(e, y, v, p):
      return jax.value_and_grad(lambda e, p: fn(e, y, valid=v, axis_name="i", block_size=3, **kw(p), **hparams),
                                argnums=(0, 1))(e, p)

    sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("i"), P("i"), P("i"), P()),
                                    out_specs=(P(), (P("i"), P()))))
    value, (grad, pgrad) = sharded(glob(e), glob(y), glob(valid), params)
    grad = multihost_utils.process_allgather(grad, tiled=True)
    value, pgrad = jax.device_get(value.addressable_shards[0].data), jax.tree.map(
        lambda x: np.asarray(x.addressable_shards[0].data), pgrad)
    with jax.default_device(jax.local_devices()[0]):
      ref_value, (ref_grad, ref_pgrad) = jax.value_and_grad(
          lambda e, p: fn(jnp.asarray(e), jnp.asarray(y), valid=jnp.asarray(valid), **kw(p), **hparams),
          argnums=(0, 1))(e, params)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5, err_msg=name)
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-5, atol=2e-6, err_msg=name)
    if params is not None:
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=name), pgrad, ref_pgrad)
  print(f"checked {len(LOSSES)} losses", flush=True)


if __name__ == "__main__":
  sys.exit(main())
