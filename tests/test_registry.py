"""`metric_jax.losses.get` / `names`: exactly the 13 registry names of DESIGN.md, each a callable loss."""

import inspect

import pytest

from metric_jax import losses

EXPECTED_NAMES = (
    "binomial_deviance", "contrastive", "generalized_lifted_structure", "gpw_pair", "gpw_triplet", "histogram",
    "lifted_structure", "multi_similarity", "nca", "npair_mc", "npair_ovo", "pairnet", "triplet",
)


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
