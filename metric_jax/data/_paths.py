"""Default locations: where prepared datasets are written and where the official raw files are read from."""

from __future__ import annotations

import os
import pathlib
from typing import Optional

DATA_DIR_ENV = "METRIC_JAX_DATA_DIR"
DATASETS_ENV = "METRIC_JAX_DATASETS"
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def default_data_dir() -> pathlib.Path:
  """`$METRIC_JAX_DATA_DIR`, else `~/.cache/metric_jax/tfds`: where the array_record files are written."""
  env = os.environ.get(DATA_DIR_ENV)
  return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "metric_jax" / "tfds"


def default_manual_dir(folder: str) -> Optional[pathlib.Path]:
  """`$METRIC_JAX_DATASETS/<folder>`, else `../shared/datasets/<folder>` next to the repository when it exists."""
  env = os.environ.get(DATASETS_ENV)
  if env:
    return pathlib.Path(env) / folder
  shared = _REPO_ROOT.parent / "shared" / "datasets"
  if shared.is_dir():
    return shared / folder
  return None
