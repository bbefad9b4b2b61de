"""`metric_jax.losses.get` / `names`: the 13 registry names of DESIGN.md and the 10 of issue 12, each a callable loss;
`init_params` / `has_params` for the losses with learnable parameters; `accepts_multi_hot`."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metric_jax import losses

EXPECTED_NAMES = (
    "arcface", "binomial_deviance", "circle", "contrastive", "cosface", "generalized_lifted_structure", "gpw_pair",
    "gpw_triplet", "histogram", "lifted_structure", "multi_similarity", "nca", "normalized_softmax", "npair_mc",
    "npair_ovo", "ntxent", "pairnet", "proxy_anchor", "proxy_nca", "softtriple", "subcenter_arcface", "supcon",
    "triplet",
)
# name -> (key, rows per class) of the parameter layout documented in `init_params`.
PARAM_LAYOUTS = {
    "proxy_nca": ("proxies", 1),
    "proxy_anchor": ("proxies", 1),
    "normalized_softmax": ("weights", 1),
    "cosface": ("weights", 1),
    "arcface": ("weights", 1),
    "subcenter_arcface": ("weights", 3),
    "softtriple": ("weights", 10),
}
CLASS_IDS_ONLY = ("npair_mc", "npair_ovo", "proxy_nca", "normalized_softmax", "cosface", "arcface",
                  "subcenter_arcface", "softtriple")


def test_registry_holds_exactly_the_design_names():
  assert tuple(losses.names()) == EXPECTED_NAMES


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_get_returns_a_loss_with_the_convenience_signature(name):
  fn = losses.get(name)
  assert callable(fn)
  parameters = inspect.signature(fn).parameters
  positional = [p.name for p in parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
  assert positional == ["embeddings", "labels"], positional
  assert "valid" in parameters and parameters["valid"].kind == parameters["valid"].KEYWORD_ONLY
  assert parameters["valid"].default is None
  hparams = [p for p in parameters.values() if p.kind == p.KEYWORD_ONLY and p.name != "valid"]
  assert all(p.default is not p.empty for p in hparams), "every hyperparameter needs a default"
  if name in PARAM_LAYOUTS:
    assert parameters["params"].kind == parameters["params"].KEYWORD_ONLY and parameters["params"].default is None
  else:
    assert "params" not in parameters


@pytest.mark.parametrize("bad_name", ["triplet_loss", "Triplet", "", "npair"])
def test_unknown_name_raises_listing_every_registered_name(bad_name):
  with pytest.raises(ValueError) as info:
    losses.get(bad_name)
  message = str(info.value)
  assert repr(bad_name) in message
  for name in EXPECTED_NAMES:
    assert name in message


def test_registering_a_name_twice_is_an_error():
  with pytest.raises(ValueError, match="contrastive"):
    losses.register("contrastive")(lambda embeddings, labels, *, valid=None: 0.0)
  assert tuple(losses.names()) == EXPECTED_NAMES


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_init_params_layout_and_has_params(name):
  params = losses.init_params(name, jax.random.PRNGKey(0), num_classes=5, embedding_dim=7)
  assert losses.has_params(name) == (name in PARAM_LAYOUTS)
  if name not in PARAM_LAYOUTS:
    assert params == {}
    return
  key, rows_per_class = PARAM_LAYOUTS[name]
  assert set(params) == {key}
  assert params[key].shape == (5 * rows_per_class, 7) and params[key].dtype == jnp.float32
  assert np.isfinite(np.asarray(params[key])).all() and float(jnp.std(params[key])) > 0


def test_init_params_reads_the_layout_hyperparameters_and_accepts_the_others():
  key = jax.random.PRNGKey(1)
  assert losses.init_params("subcenter_arcface", key, num_classes=4, embedding_dim=3, sub_centers=2, margin=0.3,
                            scale=30.0)["weights"].shape == (8, 3)
  assert losses.init_params("softtriple", key, num_classes=4, embedding_dim=3,
                            centers_per_class=5)["weights"].shape == (20, 3)
  assert losses.init_params("proxy_anchor", key, num_classes=4, embedding_dim=3, alpha=16.0)["proxies"].shape == (4, 3)
  with jax.enable_x64(True):
    assert losses.init_params("arcface", key, num_classes=4, embedding_dim=3,
                              dtype=jnp.float64)["weights"].dtype == jnp.float64


def test_init_params_follows_the_documented_initialisations():
  """Proxy-Anchor: N(0, 2/C) (kaiming normal, fan-out); SoftTriple: U(±1/sqrt(C K)); the others N(0, 1)."""
  key = jax.random.PRNGKey(2)
  anchor = np.asarray(losses.init_params("proxy_anchor", key, num_classes=50, embedding_dim=400)["proxies"])
  np.testing.assert_allclose(anchor.std(), np.sqrt(2 / 50), rtol=0.05)
  soft = np.asarray(losses.init_params("softtriple", key, num_classes=20, embedding_dim=400)["weights"])
  bound = 1 / np.sqrt(200)
  assert np.abs(soft).max() <= bound and np.abs(soft).max() > 0.95 * bound
  np.testing.assert_allclose(soft.std(), bound / np.sqrt(3), rtol=0.05)
  normal = np.asarray(losses.init_params("cosface", key, num_classes=50, embedding_dim=400)["weights"])
  np.testing.assert_allclose(normal.std(), 1.0, rtol=0.05)


@pytest.mark.parametrize("kwargs,error,argument", [
    ({"num_classes": 0, "embedding_dim": 3}, ValueError, "num_classes"),
    ({"num_classes": 3.0, "embedding_dim": 3}, ValueError, "num_classes"),
    ({"num_classes": 3, "embedding_dim": -1}, ValueError, "embedding_dim"),
    ({"num_classes": 3, "embedding_dim": 3, "dtype": jnp.int32}, TypeError, "dtype"),
    ({"num_classes": 3, "embedding_dim": 3, "margn": 0.1}, TypeError, "margn"),
    ({"num_classes": 3, "embedding_dim": 3, "sub_centers": 0}, ValueError, "sub_centers"),
])
def test_init_params_bad_arguments_name_the_argument(kwargs, error, argument):
  with pytest.raises(error, match=argument):
    losses.init_params("subcenter_arcface", jax.random.PRNGKey(0), **kwargs)


def test_init_params_and_has_params_reject_unknown_names():
  for fn in (losses.has_params, losses.accepts_multi_hot,
             lambda n: losses.init_params(n, jax.random.PRNGKey(0), num_classes=2, embedding_dim=2)):
    with pytest.raises(ValueError, match="proxy_ncaa"):
      fn("proxy_ncaa")


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_accepts_multi_hot(name):
  assert losses.accepts_multi_hot(name) == (name not in CLASS_IDS_ONLY)
