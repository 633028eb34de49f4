"""Verified download and loading of the released I3D backbone weights (their records are in `registry`,
the reading of the ResNet-50's Caffe2 file in `caffe2`).

A released weight is a record (address, checksum, the preprocessing it expects, the feature it yields and
where it comes from), not a URL in a string. Backbones: Inception-v1 I3D (Carreira and Zisserman, CVPR 2017)
and the ResNet-50 I3D baseline of non-local networks (Wang et al., CVPR 2018) used by RTFM and SSRL.
"""
from __future__ import annotations

import hashlib
import pickle
import shutil
import urllib.request
from pathlib import Path

import torch
from torch import nn

from models.i3d_inception import InceptionI3d
from models.i3d_resnet50 import ResNet50I3d
from pipelines.atomic import atomic_path
from pipelines.features.caffe2 import caffe2_r50_state_dict
from pipelines.features.registry import (
    RANDOM_INIT,
    REGISTRY,
    Checksum,
    ChecksumKind,
    WeightsFormatError,
    WeightsRecord,
)


class ChecksumMismatchError(ValueError):
    """A weights file whose content is not the one its record names."""

    def __init__(self, file: str, expected: Checksum, found: str) -> None:
        super().__init__(f"checksum mismatch for weights file {file}: expected {expected}, found "
                         f"{expected.kind}:{found}")
        self.file, self.expected, self.found = file, expected, found


class WeightsMissingError(FileNotFoundError):
    """No weights file where one was needed."""


class UnpinnedWeightsError(ValueError):
    """Weights released without a checksum, for which the user has pinned none."""


def file_digest(path: str | Path, kind: ChecksumKind) -> str:
    """Hex digest of a file, streamed."""
    path = Path(path)
    if kind == "sha256":
        digest = hashlib.sha256()
    else:
        digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(record: WeightsRecord, path: str | Path, pinned_sha256: str | None = None) -> str:
    """Check `path` against the record's published checksum and the user's pinned sha256, if any;
    return the file's sha256.

    Raises ChecksumMismatchError naming the file, the expected and the found digest. Weights released
    without a checksum need one pinned by the user (UnpinnedWeightsError gives the file's sha256 to
    check against a copy they trust): every weights file is checked before it is read.
    """
    path = Path(path)
    sha256 = file_digest(path, "sha256")
    if record.checksum is None and pinned_sha256 is None:
        raise UnpinnedWeightsError(
            f"{path}: no checksum was published for weights '{record.name}' ({record.url}) and none is pinned; "
            f"this file's sha256 is {sha256}: check it against a copy you trust, then pin it "
            f"(features.weights_sha256: {{{record.name}: {sha256}}} in the config, or "
            f"--weights-sha256 {record.name}={sha256})")
    pinned = Checksum("sha256", pinned_sha256) if pinned_sha256 else None
    for expected in (c for c in (record.checksum, pinned) if c is not None):
        found = sha256 if expected.kind == "sha256" else file_digest(path, expected.kind)
        if found != expected.value:
            raise ChecksumMismatchError(str(path), expected, found)
    return sha256


def fetch(record: WeightsRecord, cache_dir: str | Path, local_path: str | Path | None = None,
          pinned_sha256: str | None = None) -> Path:
    """Return a verified copy of the record's file.

    A configured `local_path` is verified and used where it is (never modified). Otherwise the file is
    downloaded once into `cache_dir` (to a temporary name, renamed only once verified); a cached or downloaded
    file that fails verification is deleted and the error raised.
    """
    if local_path is not None:
        local_path = Path(local_path)
        if not local_path.is_file():
            raise WeightsMissingError(f"weights file for '{record.name}' configured as {local_path} does not exist")
        verify(record, local_path, pinned_sha256)
        return local_path
    target = Path(cache_dir) / record.file_name
    if not target.is_file():
        with atomic_path(target) as partial:
            with urllib.request.urlopen(record.url, timeout=60) as response, partial.open("wb") as out:
                shutil.copyfileobj(response, out)
                promised = response.headers.get("Content-Length")
            # A connection that closes early ends the copy without an error: without a published
            # checksum only the announced length can tell a cut download from the whole file.
            if promised is not None and partial.stat().st_size != int(promised):
                raise WeightsMissingError(
                    f"{record.file_name} from {record.url}: the download stopped at {partial.stat().st_size} of "
                    f"{promised} bytes (deleted); run it again")
            try:
                verify(record, partial, pinned_sha256)
            except ChecksumMismatchError as error:
                raise ChecksumMismatchError(f"{record.file_name} downloaded from {record.url} (deleted)",
                                            error.expected, error.found) from None
        return target
    try:
        verify(record, target, pinned_sha256)
    except ChecksumMismatchError as error:
        target.unlink()
        raise ChecksumMismatchError(f"{target} (cached download, deleted)", error.expected, error.found) from None
    return target


def build_backbone(record: WeightsRecord) -> nn.Module:
    """The untrained network a record's weights belong to."""
    if record.architecture == "inception_i3d":
        return InceptionI3d(in_channels=record.in_channels)
    return ResNet50I3d()


def cached_weights(record: WeightsRecord, cache_dir: str | Path | None) -> Path | None:
    """``cache_dir/<the record's file name>`` when that file exists (where `load_backbone` looks when given no
    path), else None."""
    if cache_dir is None:
        return None
    found = Path(cache_dir) / record.file_name
    return found if found.is_file() else None


def load_backbone(record: str | WeightsRecord, path: str | Path | None = None, allow_random: bool = False, *,
                  cache_dir: str | Path | None = None, seed: int = 0, pinned_sha256: str | None = None) -> nn.Module:
    """The backbone of a registered record in eval mode, with `weights_checksum` set on it.

    Weights come from `path`, else from `cache_dir/<file_name>` when that exists; they are verified (against
    the published checksum, and `pinned_sha256` where given: see `verify`) and loaded
    with `strict=True`, and `weights_checksum` is "sha256:<hex>" of the file. Without weights this raises
    WeightsMissingError saying where to put them, unless `allow_random` is set: the network is then
    initialised from `seed` and `weights_checksum` is "random-init", so features from it can never pass as
    Kinetics features.
    """
    if isinstance(record, str):
        if record not in REGISTRY:
            raise KeyError(f"unknown backbone weights '{record}'; registered: {', '.join(sorted(REGISTRY))}")
        record = REGISTRY[record]
    if path is None:
        path = cached_weights(record, cache_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_backbone(record)
    if path is None:
        if not allow_random:
            where = Path(cache_dir or "<weights cache dir>") / record.file_name
            checksum = record.checksum or "no checksum published"
            raise WeightsMissingError(
                f"no weights for backbone '{record.name}': download {record.url} ({checksum}) to {where} "
                f"(pipelines.features.weights.fetch does this and verifies it), or pass the file's path")
        model.weights_checksum = RANDOM_INIT
        return model.eval()
    path = Path(path)
    if not path.is_file():
        raise WeightsMissingError(f"weights file for backbone '{record.name}' not found: {path}")
    sha256 = verify(record, path, pinned_sha256)
    try:
        if record.file_format == "caffe2_blobs":
            state = caffe2_r50_state_dict(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsFormatError:
        raise  # the reader's own message (a non-local checkpoint, no blobs), already naming the file
    except (pickle.UnpicklingError, EOFError, KeyError, RuntimeError, ValueError, TypeError, AttributeError) as error:
        expected = "video-nonlocal-net's Caffe2 pickle" if record.file_format == "caffe2_blobs" else "a PyTorch state dict"
        raise WeightsFormatError(f"weights file {path} for backbone '{record.name}' is not {expected} ({error})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise RuntimeError(f"weights file {path} does not fit backbone '{record.name}': {error}") from None
    model.weights_checksum = f"sha256:{sha256}"
    return model.eval()
