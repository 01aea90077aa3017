"""Deterministic weights by the published contract's rule (shared/reference/README.md).

Used to prove faithfulness: the fixture ``stmae_reference_io.npz`` was computed by the
published code with exactly these weights. Tests, benchmarks and demos also use them as
"a published-format checkpoint" when no trained weights are needed.
"""

from __future__ import annotations

import zlib
from typing import Iterable, Mapping

import numpy as np
import torch


def _rule_tensor(name: str, shape: tuple[int, ...], bn_prefixes: set[str]) -> torch.Tensor:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    prefix, _, leaf = name.rpartition(".")
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.int64)
    if leaf == "running_var":
        arr = 1 + 0.1 * rng.random(shape)
    elif leaf == "running_mean":
        arr = 0.1 * rng.standard_normal(shape)
    elif prefix in bn_prefixes and leaf == "weight":
        arr = 1 + 0.1 * rng.standard_normal(shape)
    elif prefix in bn_prefixes and leaf == "bias":
        arr = 0.1 * rng.standard_normal(shape)
    elif len(shape) >= 2:
        arr = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
    else:
        arr = 0.01 * rng.standard_normal(shape)
    return torch.from_numpy(np.asarray(arr, dtype=np.float32))


def reference_state_dict(shapes: Mapping[str, Iterable[int]]) -> dict[str, torch.Tensor]:
    """Build a state dict for the given {name: shape} (in order) by the contract's rule."""
    shapes = {k: tuple(int(s) for s in v) for k, v in shapes.items()}
    bn_prefixes = {k.rpartition(".")[0] for k in shapes if k.endswith(".running_mean")}
    return {name: _rule_tensor(name, shape, bn_prefixes) for name, shape in shapes.items()}


def reference_weights_for(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The rule's state dict for every tensor of ``model.state_dict()``."""
    return reference_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()})


def read_contract_tsv(path: str) -> dict[str, tuple[int, ...]]:
    """Parse ``stmae_state_dict.tsv`` (name, shape like 64x3x7x7 or 'scalar', dtype)."""
    out: dict[str, tuple[int, ...]] = {}
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if header[:2] != ["name", "shape"]:
            raise ValueError(f"{path}: expected a header 'name<TAB>shape<TAB>dtype'")
        for line in fh:
            if not line.strip():
                continue
            name, shape, _dtype = line.rstrip("\n").split("\t")
            out[name] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    return out
