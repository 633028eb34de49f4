"""Reading video-nonlocal-net's Caffe2 checkpoint of the ResNet-50 I3D baseline as a PyTorch state dict.

The file is a Python 2 pickle of ``{'blobs': {name: array}}``. It is unpickled by an allow-list
that admits numpy arrays and plain containers only, so the file cannot run code, and its blob names
are mapped to ``models.i3d_resnet50`` the way Tushar-N/pytorch-resnet3d@8d3e1da's
utils/convert_weights.py does.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch

from pipelines.features.registry import WeightsFormatError


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only, so a weights file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
        ("_codecs", "encode"): ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")
        return super().find_class(*self._ALLOWED[(module, name)])


_CAFFE2_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_CAFFE2_BRANCH2 = re.compile(r"res(\d)_(\d+)_branch2([abc])_(w|bn_s|bn_b|bn_rm|bn_riv)")
_CAFFE2_BRANCH1 = re.compile(r"res(\d)_(\d+)_branch1_(w|bn_s|bn_b|bn_rm|bn_riv)")


def caffe2_r50_key(blob: str) -> str | None:
    """PyTorch state-dict key of a Caffe2 video-nonlocal-net blob, or None for blobs the model has no use for.

    Caffe2 stage resK is layer(K-1); branch2a/b/c are conv1/2/3 with bn1/2/3; branch1 is the projection
    shortcut (downsample.0 conv, downsample.1 bn); bn suffixes s, b, rm, riv are scale, shift, running mean
    and running variance. Solver state (`*_momentum`, counters) maps to None.
    """
    fixed = {"conv1_w": "conv1.weight", "pred_w": "fc.weight", "pred_b": "fc.bias"}
    fixed.update({f"res_conv1_bn_{short}": f"bn1.{long}" for short, long in _CAFFE2_BN.items()})
    if blob in fixed:
        return fixed[blob]
    match = _CAFFE2_BRANCH2.fullmatch(blob)
    if match:
        stage, block, branch, kind = match.groups()
        unit = "abc".index(branch) + 1
        suffix = "conv%d.weight" % unit if kind == "w" else f"bn{unit}.{_CAFFE2_BN[kind[3:]]}"
        return f"layer{int(stage) - 1}.{int(block)}.{suffix}"
    match = _CAFFE2_BRANCH1.fullmatch(blob)
    if match:
        stage, block, kind = match.groups()
        suffix = "0.weight" if kind == "w" else f"1.{_CAFFE2_BN[kind[3:]]}"
        return f"layer{int(stage) - 1}.{int(block)}.downsample.{suffix}"
    return None


def caffe2_r50_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read video-nonlocal-net's Caffe2 checkpoint (a pickle holding {'blobs': {name: array}}) as a state dict."""
    with Path(path).open("rb") as stream:
        # The checkpoint was pickled by Python 2; latin-1 keeps its byte strings (array data) intact.
        payload = _NumpyOnlyUnpickler(stream, encoding="latin1").load()
    blobs = payload.get("blobs") if isinstance(payload, dict) else None
    if not isinstance(blobs, dict):
        found = f"a dict with keys {sorted(map(str, payload))[:5]}" if isinstance(payload, dict) else type(payload).__name__
        raise WeightsFormatError(f"{path}: expected a Caffe2 checkpoint {{'blobs': {{name: array}}}}, found {found}")
    nonlocal_blobs = sorted(blob for blob in blobs if "nonlocal" in blob)
    if nonlocal_blobs:
        # Dropping them would load the ResNet-50 around them and give features of another network.
        raise WeightsFormatError(
            f"{path}: a non-local I3D checkpoint ({len(nonlocal_blobs)} non-local blobs, e.g. {nonlocal_blobs[0]}); "
            "RTFM's and SSRL's features come from the baseline without non-local blocks, "
            "i3d_baseline_32x2_IN_pretrain_400k.pkl")
    state = {}
    for blob, value in blobs.items():
        key = caffe2_r50_key(blob)
        if key is not None:
            state[key] = torch.from_numpy(np.array(value, dtype=np.float32))
    return state
