#!/usr/bin/env bash
# Downloads into .whl/ the wheels that benchmarks/accelerator.sh needs and the device image lacks (run here, with
# network, before the device call that carries ".whl"). Never commit them: .whl/ is added to .git/info/exclude.
#
#   bash benchmarks/fetch_wheels.sh
#
# The device image (/work/.library/device/KINDS.md, "Python packages already there") has Python 3.12, jax with CUDA,
# flax, optax, orbax-checkpoint, chex, torch, numpy, scikit-learn, scipy, absl-py, pytest, pytest-xdist, hypothesis,
# tqdm, psutil, pillow, matplotlib. Of what the GPU run imports, it lacks:
#   pytorch-metric-learning  the loss benchmark's reference and the PML agreement tests (needs numpy, scikit-learn,
#                            torch, tqdm: all in the image)
#   faiss-cpu                imported by pytorch-metric-learning's AccuracyCalculator, which the retrieval and
#                            clustering tests compare against (needs numpy, packaging: in the image); ~18 MiB
# Left out on purpose: tensorflow-datasets and array_record (only `metric_jax.data` imports them, and the GPU run does
# not: benchmarks/train.py builds its PK batch with numpy when `metric_jax.data` is missing; tensorflow-datasets also
# needs `promise`, which has no wheel on PyPI), ml_collections and tensorboardX (only experiments/ and the training
# loop's writer import them).

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

WHEELS=(pytorch-metric-learning==2.9.0 faiss-cpu==1.15.1)
LIMIT_MIB=40   # the travelling tree (tracked + untracked files + .whl) must stay under 64 MiB

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"

mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"

# One version of each package (two stop the whole install on the device).
dupes=$(ls .whl/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "more than one wheel of: $dupes; remove the extra ones from .whl/" >&2
  exit 1
fi
total=$(du -cb .whl/*.whl | tail -1 | cut -f1)
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | awk '/total$/ {s += $1} END {print s + 0}')
echo "wheels: $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')"
echo "wheels $((total / 1048576)) MiB, rest of the travelling tree $((tree / 1048576)) MiB (device limit 64 MiB)"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "wheels exceed ${LIMIT_MIB} MiB: leave out what the GPU run does not need" >&2
  exit 1
fi
if [ $((total + tree)) -gt $((60 * 1048576)) ]; then
  echo "wheels + tree exceed 60 MiB: too close to the 64 MiB limit" >&2
  exit 1
fi
