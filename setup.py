"""metric_jax: deep metric learning in JAX / Flax NNX.

Install layers: the plain install serves the losses and evaluation (jax, numpy, scikit-learn, scipy); extras add the
offline datasets (`data`), training and `python -m experiments.train` (`train`), the notebooks, the benchmarks and the
tests. `experiments/` runs from the repository root and is not installed.
"""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).resolve().parent


def read_version() -> str:
  """`__version__` of metric_jax/__init__.py, read as text (importing the package would need jax at build time)."""
  text = (HERE / "metric_jax" / "__init__.py").read_text(encoding="utf-8")
  match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
  if match is None:
    raise RuntimeError("metric_jax/__init__.py has no `__version__ = \"...\"` line.")
  return match.group(1)


# What `metric_jax.losses`, `.evaluation`, `.pairwise`, `.labels`, `.mining`, `.weighting` and `.regularizers` import
# (tests/test_package.py checks it in a subprocess that blocks everything else).
CORE = ["jax>=0.7", "numpy", "scikit-learn", "scipy"]
DATA = ["tensorflow-datasets", "array_record", "pillow"]
TRAIN = DATA + ["flax>=0.11", "optax", "chex", "orbax-checkpoint", "ml_collections", "absl-py", "tqdm", "matplotlib",
                "tensorboardX"]
REFERENCES = ["torch==2.13.0", "pytorch-metric-learning", "faiss-cpu"]
NOTEBOOKS = TRAIN + ["jupyter", "nbclient", "nbformat", "ipykernel"]
TEST = TRAIN + ["nbclient", "nbformat", "ipykernel"] + REFERENCES + ["pytest", "pytest-xdist", "hypothesis"]
BENCHMARKS = TRAIN + REFERENCES + ["psutil"]


def unique(requirements):
  return list(dict.fromkeys(requirements))


setup(
    name="metric_jax",
    version=read_version(),
    description="Deep metric learning losses, data-parallel training and evaluation in JAX / Flax NNX.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["metric_jax", "metric_jax.*"]),
    python_requires=">=3.11",
    install_requires=CORE,
    extras_require={
        "data": unique(DATA),
        "train": unique(TRAIN),
        "notebooks": unique(NOTEBOOKS),
        "test": unique(TEST),
        "benchmarks": unique(BENCHMARKS),
        "all": unique(NOTEBOOKS + TEST + BENCHMARKS),
    },
)
