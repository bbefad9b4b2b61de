"""`metric_jax.train.from_config`: the image-size key, Omniglot through the config, bad values named."""

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
