"""Test-wide setup: 4 virtual CPU devices for multi-device tests, the shared datasets directory, and jax's caches
emptied after every test module."""

import gc
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DATASETS_ENV = "METRIC_JAX_DATASETS"


def datasets_dir() -> pathlib.Path:
  """`$METRIC_JAX_DATASETS`, else `../shared/datasets` next to the repository."""
  return pathlib.Path(os.environ.get(DATASETS_ENV, REPO_ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def shared_datasets():
  """Path of the shared raw datasets; missing is a skip locally and a failure in CI (CI=true)."""
  path = datasets_dir()
  if not path.is_dir():
    message = f"shared datasets not found at {path} (set {DATASETS_ENV})"
    if os.environ.get("CI", "").lower() == "true":
      pytest.fail(message)
    pytest.skip(message)
  return path


def require_dataset_file(root: pathlib.Path, *relative: str) -> pathlib.Path:
  """Path of one raw file under the shared datasets; fails in CI, skips elsewhere, when missing."""
  path = root.joinpath(*relative)
  if not path.exists():
    message = f"missing dataset file {path}"
    if os.environ.get("CI", "").lower() == "true":
      pytest.fail(message)
    pytest.skip(message)
  return path


def _memory_mappings():
  """`(mappings of this process, vm.max_map_count)`, or None off Linux."""
  try:
    with open("/proc/self/maps") as f:
      count = sum(1 for _ in f)
    with open("/proc/sys/vm/max_map_count") as f:
      return count, int(f.read())
  except OSError:
    return None


# Above this many mappings a test's teardown empties jax's caches (about 2700 live executables; Linux only).
MAPPINGS_SOFT_LIMIT = 16384


def _release_executables(where: str) -> None:
  jax.clear_caches()
  gc.collect()
  mappings = _memory_mappings()
  if mappings is not None and mappings[0] > mappings[1] // 2:
    pytest.fail(f"this test worker holds {mappings[0]} memory mappings after jax.clear_caches() ({where}), over half "
                f"of vm.max_map_count = {mappings[1]}: something keeps compiled executables (or other mappings) alive, "
                "and XLA's compiler segfaults at the limit.")


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches_per_module():
  """Drops the executables compiled by a finished test module (and fails loudly if the worker still nears the kernel's
  limit on memory mappings).

  Functions jitted at module level keep one executable per shape and static argument for the life of the process,
  and each executable holds about 6 memory mappings (`python -m benchmarks.memory_mappings`). An xdist worker
  compiles thousands of programs over the suite; at Linux's `vm.max_map_count` (65530 by default) XLA's CPU compiler
  logs "LLVM compilation error: Cannot allocate memory" and the worker dies with a segmentation fault inside
  `backend_compile_and_load` (it happened late in the suite, in tests/train). Each module compiles what it needs."""
  yield
  _release_executables("end of module")


@pytest.fixture(autouse=True)
def _bounded_executables_within_a_module():
  """The same within a long module (tests/losses/test_contract.py compiles thousands of programs): after a test that
  leaves the worker above `MAPPINGS_SOFT_LIMIT` mappings, the caches are emptied."""
  yield
  mappings = _memory_mappings()
  if mappings is not None and mappings[0] > min(MAPPINGS_SOFT_LIMIT, mappings[1] // 4):
    _release_executables("after a test")
