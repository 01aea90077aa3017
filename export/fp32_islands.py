"""Which nodes of the exported graphs stay float32 under fp16/int8.

Nodes are selected by the module namespace that the torch.export-based exporter records
on every node (metadata ``namespace``, e.g.
``: export.graphs.KeyEncoderGraph/model.key_encoder: ...KeyEncoder/model.key_encoder.layer3: ...``).

- Mask autoencoder: everything outside the mask encoder and the decoder stays float32: the
  upsampling of the coarse masks, the "others" channel and the soft aggregation (sigmoid,
  product, log-odds, softmax), as the runtime's rules ask.
- Key encoder: f16 feeds the memory similarity (values near 1,000, top-k softmax), so the
  policy says what stays float32: ``none`` (everything in fp16/int8), ``layer3`` (the last
  stage, which produces f16) or ``all`` (the whole key encoder). The default comes from
  the top-k sensitivity measured by :mod:`export.sensitivity` (see the README).
"""

from __future__ import annotations

import re

import onnx

from .options import KEY_FP32_POLICIES  # noqa: E402,F401 (re-exported)
_MASK_MODULES = re.compile(r"/model\.(value_encoder|decoder)[:.]")
_KEY_LAYER3 = re.compile(r"/model\.key_encoder\.layer3[:.]")


def _namespace(node: onnx.NodeProto) -> str:
    for prop in node.metadata_props:
        if prop.key == "namespace":
            return prop.value
    return ""


def mask_autoencoder_fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the mask-autoencoder nodes outside the mask encoder and decoder."""
    return [n.name for n in model.graph.node if not _MASK_MODULES.search(_namespace(n))]


def key_encoder_fp32_nodes(model: onnx.ModelProto, policy: str) -> list[str]:
    """Names of the key-encoder nodes that stay float32 under ``policy``."""
    if policy not in KEY_FP32_POLICIES:
        raise ValueError(f"unknown key float32 policy {policy!r}; choose one of {KEY_FP32_POLICIES}")
    if policy == "none":
        return []
    if policy == "all":
        return [n.name for n in model.graph.node]
    names = [n.name for n in model.graph.node if _KEY_LAYER3.search(_namespace(n))]
    if not names:
        raise ValueError(
            "no key-encoder node carries the namespace of layer3; the graph was not "
            "exported by export.graphs (namespaces are needed to keep layer3 in float32)"
        )
    return names
