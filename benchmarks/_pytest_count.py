"""pytest plugin of `benchmarks/accelerator.sh`: writes how many tests were selected to `$ACCELERATOR_COLLECTED`.

Loaded with `-p benchmarks._pytest_count`. A test run stopped at its time budget then still says how many of the
selected tests it ran (the JUnit report lists only those). Under pytest-xdist every worker collects the whole
selection and writes the same number.
"""

import os


def pytest_collection_finish(session):
  path = os.environ.get("ACCELERATOR_COLLECTED")
  if path:
    with open(path, "w", encoding="utf-8") as f:
      f.write(f"{len(session.items)}\n")
