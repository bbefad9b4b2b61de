"""Config plumbing shared by `experiments.train` and `experiments.sweep`: free-form loss hyperparameters from the
command line, dotted overrides, flattening, hashing and the restart comparison.

Loss hyperparameters (`config.objective.loss_hparams`) are a free-form dict: which names are valid depends on the chosen
loss, so they cannot be declared in the config file. `--config.objective.loss_hparams.<name>=<value>` flags are taken
out of `argv` before absl parses it (`split_loss_hparam_flags`) and set on the loaded config (`set_loss_hparams`);
`metric_jax.train.from_config.loss_hparams` then checks every name against the loss's keyword arguments.
"""

from __future__ import annotations

import ast
import hashlib
import json
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

LOSS_HPARAMS_FLAG = "--config.objective.loss_hparams."

# Keys that may change between a run's start and a restart without changing what the run computes.
SAFE_KEYS = ("name", "num_steps", "log_every", "eval_every", "checkpoint_every", "progress", "seeds", "data_dir",
             "eval_batch_size")
SAFE_PREFIXES = ("distributed.",)
# Keys that never change a run's numbers (the run hash ignores them; `num_steps` and `eval_every` do change them).
COSMETIC_KEYS = ("name", "log_every", "checkpoint_every", "progress", "seeds", "data_dir", "eval_batch_size")
# Keys added to the config after runs were recorded, with the value that means "as before the key existed" (the
# feature off). A saved config without such a key compares as having this value, and the run hash leaves the key out
# at this value, so run directories and sweep records written before the key existed still resume and are still
# reused. Any other value changes the hash and, like every key outside SAFE_KEYS, is refused on restart.
ADDED_KEYS = {"memory.size": 0, "memory.start_step": 0, "model.dtype": "float32", "npair_mining": False,
              "validation_per_class": 0, "selection_metric": "map@r"}


def parse_value(text: str) -> Any:
  """A command-line value: a Python literal (`0.2`, `(1, 2)`, `'x'`, `True`), `true`/`false`, else the string."""
  low = text.strip().lower()
  if low in ("true", "false"):
    return low == "true"
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def split_loss_hparam_flags(argv: Sequence[str]) -> Tuple[List[str], Dict[str, Any]]:
  """`(argv without the loss-hyperparameter flags, {name: value})`. Accepts `--flag=value` and `--flag value`."""
  rest, hparams = [], {}
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith(LOSS_HPARAMS_FLAG):
      body = arg[len(LOSS_HPARAMS_FLAG):]
      if "=" in body:
        name, value = body.split("=", 1)
      elif i + 1 < len(argv):
        name, value = body, argv[i + 1]
        i += 1
      else:
        raise ValueError(f"flag {arg} has no value.")
      if not name.isidentifier():
        raise ValueError(f"flag {arg}: {name!r} is not a hyperparameter name.")
      hparams[name] = parse_value(value)
    else:
      rest.append(arg)
    i += 1
  return rest, hparams


def set_loss_hparams(config, hparams: Mapping[str, Any]) -> None:
  """Sets `config.objective.loss_hparams[name] = value` for each item (the dict is free-form)."""
  if not hparams:
    return
  with config.unlocked():
    for name, value in hparams.items():
      config.objective.loss_hparams[name] = value


def apply_overrides(config, overrides: Mapping[str, Any]):
  """A copy of `config` with dotted overrides applied, e.g. `{"objective.loss": "triplet",
  "objective.loss_hparams.margin": 0.2}`. Unknown keys outside `loss_hparams` are an error naming the key."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    for dotted, value in overrides.items():
      parts = dotted.split(".")
      node = c
      for i, part in enumerate(parts[:-1]):
        if part not in node:
          raise KeyError(f"override {dotted!r}: {'.'.join(parts[:i + 1])!r} is not a config key.")
        node = node[part]
      last = parts[-1]
      free = parts[:-1] == ["objective", "loss_hparams"]
      if last not in node and not free:
        raise KeyError(f"override {dotted!r}: {last!r} is not a key of config.{'.'.join(parts[:-1]) or '(root)'}.")
      node[last] = tuple(value) if isinstance(value, list) else value
  return c


def to_plain(config) -> Dict[str, Any]:
  """The config as plain JSON-able nested dicts (tuples as lists)."""
  d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return json.loads(json.dumps(d, default=list))


def flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, Mapping) and v and not (k == "loss_hparams"):
      out.update(flatten(v, key + "."))
    elif isinstance(v, Mapping) and k == "loss_hparams":
      out[key] = dict(sorted(v.items()))
    else:
      out[key] = v
  return out


def _with_added_keys(plain: Mapping[str, Any]) -> Dict[str, Any]:
  """`flatten(plain)` with the `ADDED_KEYS` it lacks at their defaults (a config saved before they existed)."""
  return {**ADDED_KEYS, **flatten(plain)}


def is_safe_key(key: str) -> bool:
  return key in SAFE_KEYS or key.startswith(SAFE_PREFIXES)


def differing_keys(old: Mapping[str, Any], new: Mapping[str, Any], *, ignore_safe: bool = True) -> List[str]:
  """Dotted keys whose values differ between two plain configs (keys present in only one count)."""
  a, b = _with_added_keys(old), _with_added_keys(new)
  keys = sorted(set(a) | set(b))
  return [k for k in keys if a.get(k, "<absent>") != b.get(k, "<absent>") and not (ignore_safe and is_safe_key(k))]


def describe_differences(old: Mapping[str, Any], new: Mapping[str, Any], keys: Iterable[str]) -> str:
  a, b = _with_added_keys(old), _with_added_keys(new)
  return "; ".join(f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys)


def config_hash(plain: Mapping[str, Any]) -> str:
  """Short hash of everything that changes what a run computes (`COSMETIC_KEYS` and `distributed.*` excluded, and the
  `ADDED_KEYS` at their defaults, so a config saved before they existed keeps its hash)."""
  flat = {k: v for k, v in flatten(plain).items() if k not in COSMETIC_KEYS and not k.startswith(SAFE_PREFIXES)
          and not (k in ADDED_KEYS and type(v) is type(ADDED_KEYS[k]) and v == ADDED_KEYS[k])}
  return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


def record_hash(record: Mapping[str, Any]) -> Any:
  """The hash of a saved record's or summary's config, recomputed with `config_hash` (so a record saved before a key
  of `ADDED_KEYS` existed, or before it was listed there, hashes like the same config today); the stored
  `config_hash` when it holds no config."""
  return config_hash(record["config"]) if isinstance(record.get("config"), Mapping) else record.get("config_hash")


def readable_lines(plain: Mapping[str, Any]) -> List[str]:
  """`key = value` lines of a config, one per leaf, dotted keys in file order."""
  return [f"{k} = {json.dumps(v)}" for k, v in flatten(plain).items()]


__all__ = ["parse_value", "split_loss_hparam_flags", "set_loss_hparams", "apply_overrides", "to_plain", "flatten",
           "differing_keys", "describe_differences", "config_hash", "record_hash", "readable_lines", "is_safe_key",
           "SAFE_KEYS", "ADDED_KEYS"]
