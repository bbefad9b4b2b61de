"""`metric_jax.train.from_config`: the image-size key, Omniglot through the config, the cross-batch memory section, bad
values named."""

import numpy as np
import pytest

from metric_jax.train import from_config
from tests.conftest import require_dataset_file
from tests.experiments._tiny import tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def test_image_size_key_resizes_at_load_time(data_dir):
  c = tiny_config(image_size=12, data_dir=str(data_dir))
  parts = from_config.load_data(c)
  assert parts.train.images.shape[1:] == (12, 12, 1) and parts.test.images.shape[1:] == (12, 12, 1)
  assert parts.validation is None
  assert from_config.image_size(tiny_config()) is None
  with pytest.raises(ValueError, match="config.image_size"):
    from_config.image_size(tiny_config(image_size=-1))


def test_omniglot_config_gives_the_disjoint_protocol_at_28px(shared_datasets, data_dir):
  require_dataset_file(shared_datasets, "omniglot", "images_background_small1.zip")
  from experiments.configs import omniglot
  c = omniglot.get_config()
  c.data_dir = str(data_dir)
  c.manual_dir = str(shared_datasets / "omniglot")
  parts = from_config.load_data(c)
  assert [p.images.shape for p in parts] == [(1800, 28, 28, 1), (920, 28, 28, 1), (2120, 28, 28, 1)]
  assert parts.train.images[:, 0, :, 0].mean() < 2  # inverted: background 0, so shift padding is background


def test_bad_config_values_name_their_key():
  with pytest.raises(from_config.ConfigError, match="config.model.dtype"):
    from_config.build_model(tiny_config(**{"model.dtype": "float16"}), (8, 8, 1), 5)
  with pytest.raises(ValueError, match="config.split"):
    from_config.load_data(tiny_config(split="nope"))


def test_every_config_has_the_memory_section_off_by_default():
  from experiments.configs import default, omniglot, pairnet_mnist
  for module in (default, omniglot, pairnet_mnist):
    c = module.get_config()
    assert (c.memory.size, c.memory.start_step) == (0, 0), module.__name__
    assert from_config.memory_settings(c) == (0, 0)
  saved_before_the_section = {k: v for k, v in tiny_config().to_dict().items() if k != "memory"}
  assert from_config.memory_settings(saved_before_the_section) == (0, 0)   # an old run's config.json


def test_build_trainer_passes_the_memory_to_the_trainer():
  trainer, _ = from_config.build_trainer(tiny_config(**{"memory.size": 100, "memory.start_step": 3}), (8, 8, 1), 5)
  assert (trainer.memory_size, trainer.memory_start_step, trainer.memory_dim) == (100, 3, 8)
  state = trainer.init_state(seed=0)
  assert state.memory["embeddings"].shape == (100, 8) and not state.memory["valid"].any()
  plain, _ = from_config.build_trainer(tiny_config(), (8, 8, 1), 5)
  assert plain.memory_size == 0 and plain.init_state(seed=0).memory == {}


@pytest.mark.parametrize("changes, match", [
    ({"memory.size": -1}, r"config\.memory\.size.*non-negative int.*-1"),
    ({"memory.start_step": -5}, r"config\.memory\.start_step.*non-negative int"),
    ({"memory.size": True}, r"config\.memory\.size.*non-negative int"),
    ({"memory.size": 16, "objective.loss": "proxy_anchor"}, r"config\.memory\.size.*'proxy_anchor'.*class parameters"),
    ({"memory.size": 16, "objective.loss": "arcface"}, r"config\.memory\.size.*'arcface'"),
])
def test_bad_memory_values_name_their_key(changes, match):
  c = tiny_config()
  with c.unlocked():
    for key, value in changes.items():
      section, name = key.split(".")
      c[section][name] = value
  with pytest.raises(from_config.ConfigError, match=match):
    from_config.build_trainer(c, (8, 8, 1), 5)


def test_memory_with_a_pair_objective_or_multi_hot_labels_is_refused():
  from experiments.configs import pairnet_mnist
  c = pairnet_mnist.get_config()
  c.memory.size = 32
  with pytest.raises(from_config.ConfigError, match=r"config\.memory\.size.*objective\.kind.*'pairnet'"):
    from_config.memory_settings(c)
  c = tiny_config(**{"memory.size": 32})
  from_config.check_memory_labels(c, np.zeros((10,), np.int32))
  with pytest.raises(from_config.ConfigError, match=r"config\.memory\.size.*class-id labels.*\(10, 3\)"):
    from_config.check_memory_labels(c, np.zeros((10, 3), np.int32))
  from_config.check_memory_labels(tiny_config(), np.zeros((10, 3), np.int32))   # no memory: any labels
