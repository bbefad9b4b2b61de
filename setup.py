"""metric_jax: deep metric learning in JAX / Flax NNX."""

from setuptools import find_packages, setup

setup(
    name="metric_jax",
    version="0.1.0",
    description="Deep metric learning losses, data-parallel training and evaluation in JAX / Flax NNX.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["metric_jax", "metric_jax.*", "experiments", "experiments.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.7",
        "flax>=0.11",
        "optax",
        "chex",
        "orbax-checkpoint",
        "tensorflow-datasets",
        "array_record",
        "pillow",
        "scikit-learn",
        "scipy",
        "numpy",
        "ml_collections",
        "absl-py",
        "tqdm",
        "matplotlib",
        "tensorboardX",
    ],
    extras_require={
        "test": [
            "pytest",
            "pytest-xdist",
            "hypothesis",
            "torch==2.13.0",
            "pytorch-metric-learning",
            "faiss-cpu",
            "nbclient",
            "nbformat",
            "ipykernel",
        ],
        "notebooks": ["jupyter", "nbclient", "nbformat", "ipykernel"],
        "benchmarks": ["torch==2.13.0", "pytorch-metric-learning", "faiss-cpu", "psutil"],
    },
)
