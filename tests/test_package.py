"""The package surface: one version, lazy submodules, and a plain install that serves losses and evaluation.

The lean-import checks run in fresh subprocesses (the test process has imported everything already). The strongest one
blocks the extras' packages with an import hook and then imports AND runs a loss and `evaluate`, so an import hidden in
a function body, or one swallowed by `try/except ImportError`, is caught as well.
"""

import json
import re
import subprocess
import sys
import textwrap

import pytest

import metric_jax
from tests.conftest import REPO_ROOT

# Top-level packages the plain install does not provide (they come with the extras).
EXTRAS_ONLY = ("flax", "optax", "chex", "orbax", "tensorstore", "tensorflow_datasets", "tensorflow", "array_record",
               "pyarrow", "PIL", "matplotlib", "ml_collections", "absl", "tqdm", "tensorboardX", "torch", "faiss",
               "pytorch_metric_learning", "experiments")
CORE_REQUIREMENTS = {"jax", "numpy", "scikit-learn", "scipy"}
LEAN_MODULES = ("losses", "evaluation", "pairwise", "labels", "mining", "weighting", "regularizers")


def _run(code: str, timeout: int = 300) -> str:
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  assert result.returncode == 0, result.stderr[-4000:]
  return result.stdout


@pytest.fixture(scope="module")
def setup_config():
  """name, version, packages, install_requires and extras of setup.py, read without building anything."""
  out = _run("""
      import json, setuptools, distutils.core
      d = distutils.core.run_setup("setup.py", stop_after="config")
      print(json.dumps({"name": d.get_name(), "version": d.get_version(), "packages": d.packages,
                        "install_requires": d.install_requires, "extras": d.extras_require}))
  """)
  return json.loads(out.strip().splitlines()[-1])


def _name(requirement: str) -> str:
  return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()


def test_one_version_shared_with_setup_and_a_package_docstring(setup_config):
  assert re.fullmatch(r"\d+\.\d+\.\d+", metric_jax.__version__)
  assert setup_config["version"] == metric_jax.__version__
  assert setup_config["name"] == "metric_jax"
  assert "deep metric learning" in metric_jax.__doc__.lower() and "losses" in metric_jax.__doc__


def test_setup_install_layers(setup_config):
  assert {_name(r) for r in setup_config["install_requires"]} == CORE_REQUIREMENTS
  packages = setup_config["packages"]
  assert "metric_jax" in packages and all(p == "metric_jax" or p.startswith("metric_jax.") for p in packages)
  assert not any(p.split(".")[0] == "experiments" for p in packages)  # runs from the repository root only
  extras = {k: {_name(r) for r in v} for k, v in setup_config["extras"].items()}
  assert set(extras) == {"data", "train", "test", "notebooks", "benchmarks", "all"}
  assert {"tensorflow-datasets", "array_record", "pillow"} <= extras["data"]
  assert extras["data"] | {"flax", "optax", "orbax-checkpoint", "ml_collections", "absl-py", "tqdm", "matplotlib",
                           "tensorboardx"} <= extras["train"]
  assert extras["train"] | {"nbclient", "nbformat", "ipykernel", "pytest", "pytest-xdist", "hypothesis", "torch",
                            "pytorch-metric-learning", "faiss-cpu"} <= extras["test"]
  assert extras["train"] <= extras["notebooks"] and extras["train"] <= extras["benchmarks"]
  assert set().union(*(v for k, v in extras.items() if k != "all")) == extras["all"]


def test_submodules_are_imported_lazily_on_attribute_access():
  out = _run("""
      import sys
      import metric_jax
      before = sorted(m for m in sys.modules if m.startswith("metric_jax."))
      evaluate = metric_jax.evaluation.evaluate
      triplet = metric_jax.losses.get("triplet")
      try:
        metric_jax.no_such_module
        raise SystemExit("no AttributeError")
      except AttributeError as e:
        assert "no_such_module" in str(e), e
      print(before, "metric_jax.evaluation" in sys.modules, "metric_jax.train" in sys.modules)
  """)
  assert out.strip() == "[] True False"
  assert set(metric_jax.SUBMODULES) <= set(dir(metric_jax))
  for name in metric_jax.SUBMODULES:  # every advertised submodule resolves (this process has the extras)
    assert getattr(metric_jax, name).__name__ == f"metric_jax.{name}"


def test_losses_and_evaluation_import_and_run_without_the_extras():
  out = _run(f"""
      import importlib.abc, sys

      BLOCKED = {EXTRAS_ONLY!r}
      attempts = []

      class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
          if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not in the plain install)", name=name)
          return None

      sys.meta_path.insert(0, Block())
      import numpy as np
      import jax, jax.numpy as jnp
      import metric_jax
      {"; ".join(f"import metric_jax.{m}" for m in LEAN_MODULES)}
      from metric_jax import evaluation, losses, regularizers

      emb = jax.random.normal(jax.random.PRNGKey(0), (24, 8))
      lab = jnp.repeat(jnp.arange(6), 4)
      value, grad = jax.value_and_grad(lambda e: losses.get("triplet")(e, lab, mining="semihard", margin=0.2))(emb)
      reg = regularizers.global_orthogonal(emb, lab)
      metrics = evaluation.evaluate(np.asarray(emb), np.asarray(lab), ks=(1, 2))
      assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad))) and np.isfinite(float(reg))
      assert {{"recall@1", "map@r", "nmi"}} <= set(metrics), sorted(metrics)
      try:
        metric_jax.train
        raise SystemExit("metric_jax.train imported without its extra")
      except ModuleNotFoundError as e:
        assert "pip install 'metric_jax[train]'" in str(e), e
      attempts = [a for a in attempts if a.split(".")[0] not in ("flax", "optax", "orbax", "tensorflow_datasets")]
      print("attempts:", sorted(set(attempts)))
      print("loaded:", sorted(m for m in BLOCKED if m in sys.modules))
  """)
  assert "attempts: []" in out and "loaded: []" in out, out
