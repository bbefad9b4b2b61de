"""Memory mappings held by compiled XLA:CPU executables, and what happens at the kernel's limit (Linux only).

  python -m benchmarks.memory_mappings [--compiles 400] [--fill]

1. Compiles `--compiles` distinct small programs while keeping the jitted functions alive (as functions jitted at
   module level keep one executable per shape), printing the process's mappings (`/proc/self/maps`) as they grow,
   then after `jax.clear_caches()`.
2. With `--fill`: a child process first takes all but a few hundred of `vm.max_map_count` mappings with small mmaps,
   then compiles; its exit status shows what XLA:CPU does when it cannot map code (on jax 0.10.2 it logs
   "LLVM compilation error: Cannot allocate memory" and dies with SIGSEGV, or hangs).

This is why the test suite empties jax's caches after every module (tests/conftest.py): one xdist worker compiles
thousands of programs over the suite.
"""

from __future__ import annotations

import argparse
import mmap
import os
import signal
import subprocess
import sys
import time


def mappings() -> int:
  with open("/proc/self/maps") as f:
    return sum(1 for _ in f)


def max_map_count() -> int:
  with open("/proc/sys/vm/max_map_count") as f:
    return int(f.read())


def _program(i):
  import jax
  import jax.numpy as jnp
  return jax.jit(lambda a: jnp.tanh(a * i) @ a + i)


def grow(compiles: int) -> None:
  import jax
  import jax.numpy as jnp
  x = jnp.ones((8, 8))
  _program(-1)(x).block_until_ready()
  start, t0, kept = mappings(), time.perf_counter(), []
  print(f"mappings before: {start} (vm.max_map_count {max_map_count()})")
  step = max(1, compiles // 4)
  for i in range(compiles):
    fn = _program(i)
    fn(x).block_until_ready()
    kept.append(fn)
    if (i + 1) % step == 0:
      now = mappings()
      print(f"{i + 1:6d} executables alive: {now} mappings (+{(now - start) / (i + 1):.1f} per executable), "
            f"{time.perf_counter() - t0:.1f} s")
  kept.clear()
  jax.clear_caches()
  print(f"after jax.clear_caches(): {mappings()} mappings")


def fill_then_compile(headroom: int = 600) -> None:
  """(child) Takes mappings up to `max_map_count - headroom`, then compiles until something gives."""
  import jax
  import jax.numpy as jnp
  x = jnp.ones((8, 8))
  _program(-1)(x).block_until_ready()
  held, target = [], max_map_count() - headroom
  while (missing := target - mappings()) > 0:
    for _ in range(max(1, missing // 2)):  # alternating protections keep the kernel from merging neighbours
      prot = mmap.PROT_READ if len(held) % 2 else mmap.PROT_READ | mmap.PROT_WRITE
      held.append(mmap.mmap(-1, 4096, prot=prot))
  print(f"child: {mappings()} mappings of {max_map_count()}; compiling", flush=True)
  kept = []
  for i in range(5000):
    kept.append(_program(i))
    kept[-1](x).block_until_ready()
    if i % 20 == 0:
      print(f"child: {i + 1} compiled, {mappings()} mappings", flush=True)
  print("child: 5000 programs compiled without failing", flush=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--compiles", type=int, default=400)
  parser.add_argument("--fill", action="store_true", help="also run the child that compiles at the mapping limit")
  parser.add_argument("--child_timeout", type=int, default=120, help="seconds before the child counts as hung")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if args.child:
    fill_then_compile()
    return
  import platform
  import jax
  print(f"{platform.machine()}, {os.cpu_count()} CPU cores, Linux {platform.release()}, python "
        f"{platform.python_version()}, jax {jax.__version__}")
  grow(args.compiles)
  if args.fill:
    try:
      proc = subprocess.run([sys.executable, "-m", "benchmarks.memory_mappings", "--child"], capture_output=True,
                            text=True, timeout=args.child_timeout)
      out, code = proc.stdout + proc.stderr, proc.returncode
      status = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    except subprocess.TimeoutExpired as e:
      out = (e.stdout or b"").decode() + (e.stderr or b"").decode()
      status = f"hung: no progress to report, killed after {args.child_timeout} s"
    lines = [l for l in out.strip().splitlines() if not l.startswith(("  File", "Extension modules"))]
    print(f"child at the mapping limit: {status}\n" + "\n".join(lines[-6:]))


if __name__ == "__main__":
  main()
