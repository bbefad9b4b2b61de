"""Data-test fixtures: one prepared-datasets directory per test session, so every builder runs once per session."""

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("metric_jax_tfds")
