"""Extract one video's I3D snippet features: a frames HDF5 file in, a features HDF5 file out.

The video is cut into 16-frame snippets by the preset's rule (``pipelines.features.presets``), each snippet
is preprocessed into its views (ten-crop, centre or one squashed view) and run through the backbone in
batches of ``batch_size`` snippets. Frames are read from the frames file one batch at a time, so memory
does not grow with the video's length. For a feature set with patches (SSRL, Li et al., ECCV 2022) the
same frames also give the patch features of every grid, stored beside the clip features with the same T and
marked reconstructed; given a published clip features file of the video (RTFM's), only the patches are
extracted and the clip features are copied from it. The output (layout in ``pipelines.features.store``)
records every preset parameter, the weights' sha256 (or "random-init"), the source frames file and its own
provenance; it is written under a temporary name and renamed once complete.

Optical flow: the ``arnet`` preset's second stream is I3D on TV-L1 flow (``pipelines.features.flow``: n flow
frames for n frames, stored as 8-bit x, y images), preprocessed like the RGB frames and run through the
preset's ``flow_backbone``; the feature is RGB then flow, concatenated. It is computed only with ``flow``
(``--flow``, config ``features.flow``), one batch at a time like the frames; TV-L1 runs on the CPU even
where the backbones have a GPU, and costs more than they do. Without it such features hold the RGB stream
only and say so in ``missing_streams``.

Run by hand::

    python -m pipelines.features.extract FRAMES.h5 OUT.h5 --feature-set rtfm_ssrl_patches \\
        --weights-dir resources/weights [--weights r50_nonlocal_k400=FILE] \\
        [--weights-sha256 r50_nonlocal_k400=SHA256] [--allow-random-weights] \\
        [--batch-size 4] [--device auto] [--spatial-scale 1.0] [--seed 0] [--published-clip CLIP.npy] [--flow]
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import torch

from pipelines.atomic import atomic_path
from pipelines.features import store
from pipelines.features.feature_sets import FEATURE_SETS, backbones_needed, missing_streams, parse_feature_set
from pipelines.features.flow import TVL1Params, block_flow
from pipelines.features.presets import ClipPreset, PatchPreset, snippet_frame_indices
from pipelines.features.preprocess import preprocess_clip, preprocess_patch_clip
from pipelines.features.published import PublishedFeaturesError, copy_rows, load_clip
from pipelines.features.weights import (
    REGISTRY,
    ChecksumMismatchError,
    UnpinnedWeightsError,
    WeightsFormatError,
    WeightsMissingError,
    load_backbone,
)
from pipelines.frame_store import FrameReader
from pipelines.provenance import sha256_file, versions

FLOW_OFF_NOTE = "flow stream not requested (features.flow false, no --flow): the features hold the RGB stream only"


def _scaled(size: int, scale: float) -> int:
    return max(8, int(round(size * scale)))


def scale_preset(preset: ClipPreset | PatchPreset, scale: float) -> ClipPreset | PatchPreset:
    """The preset with every spatial size (resize, crop, patch frame and patch size) multiplied by ``scale``.

    Only for smoke runs and tests on machines without a GPU: such features are not the preset's features,
    and every file made this way records the scale.
    """
    if scale == 1.0:
        return preset
    if isinstance(preset, PatchPreset):
        return dataclasses.replace(preset, frame_hw=tuple(_scaled(s, scale) for s in preset.frame_hw),
                                   patch_size=_scaled(preset.patch_size, scale))
    return dataclasses.replace(
        preset,
        short_side=None if preset.short_side is None else _scaled(preset.short_side, scale),
        squash_hw=None if preset.squash_hw is None else tuple(_scaled(s, scale) for s in preset.squash_hw),
        crop_size=None if preset.crop_size is None else _scaled(preset.crop_size, scale),
    )


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _as_rgb(frames: np.ndarray) -> np.ndarray:
    # Gray frames files hold one channel; I3D takes RGB, so the channel is repeated (what a gray video decodes to).
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def _flow_note(feature_set: str, flow_params: TVL1Params | None) -> str:
    if flow_params is not None:
        return flow_params.describe()
    return FLOW_OFF_NOTE if missing_streams(feature_set) else "not part of this preset"


def _run(backbone: torch.nn.Module, clips: torch.Tensor, device: str) -> torch.Tensor:
    with torch.inference_mode():
        return backbone(clips.to(device)).float().cpu()


def _checked_request(feature_set: str, batch_size: int, published_clip: Path | None,
                     flow: bool) -> tuple[ClipPreset, PatchPreset | None]:
    """The presets of a feature set, once the request is one that can be extracted."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    clip_preset, patch_preset = parse_feature_set(feature_set)
    if published_clip is not None and patch_preset is None:
        raise ValueError(f"{feature_set} has no patch features to extract: convert published clip features with "
                         "python -m pipelines.features.published convert")
    if flow and (clip_preset.flow_backbone is None or published_clip is not None):
        why = "its clip features are published" if published_clip is not None else \
            f"preset {clip_preset.name} has no flow stream"
        raise ValueError(f"{feature_set}: flow asked for, but {why}")
    return clip_preset, patch_preset


def _attributes(feature_set: str, clip_preset: ClipPreset, patch_preset: PatchPreset | None, reader: FrameReader,
                frames_path: Path, n_snippets: int, backbones: dict, published_clip: Path | None,
                flow_params: TVL1Params | None, spatial_scale: float, batch_size: int, device: str,
                seed: int) -> dict:
    """What a features file records about how it was made."""
    used = {name: model.weights_checksum for name, model in backbones.items()}
    attrs = {
        "format": store.FORMAT,
        "feature_set": feature_set,
        "origin": "extracted" if published_clip is None else "published clip, extracted patches",
        "preset": clip_preset.name,
        "preset_params": dataclasses.asdict(clip_preset),
        "tail": clip_preset.snippets.tail,
        "n_frames": len(reader),
        "n_snippets": n_snippets,
        "frames_source_shape": list(reader.shape),
        "backbones": used if published_clip is None else
        used | {"upstream extractor": f"published features from {Path(published_clip).parent}"},
        "missing_streams": list(missing_streams(feature_set, flow_params is not None)),
        "flow": _flow_note(feature_set, flow_params),
        "spatial_scale": spatial_scale,
        "patch_grids": [list(grid) for grid in (patch_preset.grids if patch_preset else ())],
        "patches_reconstructed": bool(patch_preset),
        "source_frames": str(frames_path),
        "source_frames_attrs": reader.attrs,
        "batch_size": batch_size,
        "device": device,
        "seed": seed,
        "versions": versions(),
    }
    if flow_params is not None:
        attrs["flow_params"] = dataclasses.asdict(flow_params)
    if published_clip is not None:
        attrs["published_files"] = {str(published_clip): sha256_file(published_clip)}
    if patch_preset:
        attrs |= {"patch_preset": patch_preset.name, "patch_preset_params": dataclasses.asdict(patch_preset),
                  "patch_provenance": patch_preset.provenance}
    return attrs


def extract(
    frames_path: Path,
    out: Path,
    feature_set: str,
    *,
    weights: Mapping[str, Path] | None = None,
    weights_dir: Path | None = None,
    weights_sha256: Mapping[str, str] | None = None,
    allow_random_weights: bool = False,
    batch_size: int = 4,
    device: str = "auto",
    spatial_scale: float = 1.0,
    seed: int = 0,
    published_clip: Path | None = None,
    flow: bool = False,
) -> dict:
    """Write the features of one video; return the attributes written and the seconds it took.

    With ``published_clip`` (a published clip features file of the video, e.g. RTFM's) the clip features
    are taken from it, checked against the frame count, and only the patch features are extracted. With
    ``flow`` (presets with a ``flow_backbone`` only) the clip features are RGB then TV-L1 flow features.

    Raises WeightsMissingError (naming where to put the file) when a backbone has no weights and random
    ones are not allowed, and ChecksumMismatchError for a weights file with the wrong content.
    """
    clip_preset, patch_preset = _checked_request(feature_set, batch_size, published_clip, flow)
    flow_params = TVL1Params() if flow else None
    unscaled_name = clip_preset.name
    clip_preset = scale_preset(clip_preset, spatial_scale)
    patch_preset = scale_preset(patch_preset, spatial_scale) if patch_preset else None
    device = resolve_device(device)
    weights, pins = dict(weights or {}), dict(weights_sha256 or {})
    backbones = {
        name: load_backbone(name, weights.get(name), allow_random_weights, cache_dir=weights_dir, seed=seed,
                            pinned_sha256=pins.get(name)).to(device)
        for name in backbones_needed(feature_set, published_clip is not None, flow)
    }
    started = time.perf_counter()
    with FrameReader(frames_path) as reader, atomic_path(out) as tmp, h5py.File(tmp, "w") as handle:
        n_frames = len(reader)
        snippets = snippet_frame_indices(clip_preset, n_frames)
        n = len(snippets)
        if published_clip is not None:
            published = load_clip(Path(published_clip), unscaled_name, n_frames)
            copy_rows(published, store.create_dataset(handle, store.FEATURES, *published.shape), Path(published_clip))
        else:
            clip_dim = clip_preset.feature_dim if flow else REGISTRY[clip_preset.rgb_backbone].feature_dim
            clip_out = store.create_dataset(handle, store.FEATURES, n, clip_preset.n_crops, clip_dim)
        grids = patch_preset.grids if patch_preset else ()
        patch_dim = REGISTRY[patch_preset.backbone].feature_dim if patch_preset else 0
        patch_out = {grid: store.create_dataset(handle, store.patch_dataset(grid), n, grid[0] * grid[1], patch_dim)
                     for grid in grids}
        for start in range(0, n, batch_size):
            batch = snippets[start : start + batch_size]
            first, last = int(batch[0].min()), int(batch[-1].max())
            # With flow, one frame more than the batch uses: the last frame's flow needs its successor.
            stop = min(last + 2, n_frames) if flow else last + 1
            raw = reader.clip(first, stop - first)
            frames = _as_rgb(raw)
            if published_clip is None:
                views = [preprocess_clip(clip_preset, frames[idx - first]) for idx in batch]
                features = _run(backbones[clip_preset.rgb_backbone], torch.cat(views), device)
                if flow:
                    flows = block_flow(raw, ends_video=stop == n_frames, params=flow_params)
                    views = [preprocess_clip(clip_preset, flows[idx - first]) for idx in batch]
                    flow_features = _run(backbones[clip_preset.flow_backbone], torch.cat(views), device)
                    features = torch.cat([features, flow_features], dim=1)
                clip_out[start : start + len(batch)] = features.reshape(len(batch), clip_preset.n_crops,
                                                                        clip_dim).numpy()
            for grid in grids:
                patches = [preprocess_patch_clip(patch_preset, frames[idx - first], grid) for idx in batch]
                features = _run(backbones[patch_preset.backbone], torch.cat(patches), device)
                patch_out[grid][start : start + len(batch)] = features.reshape(len(batch), -1, patch_dim).numpy()
        attrs = _attributes(feature_set, clip_preset, patch_preset, reader, frames_path, n, backbones,
                            published_clip, flow_params, spatial_scale, batch_size, device, seed)
        store.write_attrs(handle, attrs)
        for grid in grids:
            patch_out[grid].attrs["reconstructed"] = True
    # The time is returned, not stored: a file's bytes depend only on what it was made from.
    return attrs | {"seconds": round(time.perf_counter() - started, 3)}


def _weights_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or name not in REGISTRY:
        raise argparse.ArgumentTypeError(f"expected BACKBONE=FILE with BACKBONE one of {', '.join(sorted(REGISTRY))}")
    return name, Path(path)


def _pins_arg(text: str) -> list[tuple[str, str]]:
    """BACKBONE=SHA256 pins, comma-separated; "none" for no pin (as the workflow passes them)."""
    pins = []
    for item in [] if text == "none" else text.split(","):
        name, sep, digest = item.partition("=")
        if not sep or name not in REGISTRY or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise argparse.ArgumentTypeError(f"expected BACKBONE=SHA256 (64 lower-case hex digits; several "
                                             f"comma-separated, or none) with BACKBONE one of "
                                             f"{', '.join(sorted(REGISTRY))}")
        pins.append((name, digest))
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("frames", type=Path, help="the video's frames file")
    parser.add_argument("out", type=Path, help="features file to write")
    parser.add_argument("--feature-set", required=True, choices=sorted(FEATURE_SETS))
    parser.add_argument("--weights", type=_weights_arg, action="append", default=[], metavar="BACKBONE=FILE",
                        help="weights file of a backbone (repeatable); else WEIGHTS_DIR/<its file name>")
    parser.add_argument("--weights-dir", type=Path, help="folder holding the weights files under their released names")
    parser.add_argument("--weights-sha256", type=_pins_arg, action="extend", default=[], metavar="BACKBONE=SHA256",
                        help="the sha256 you pinned for weights released without a checksum (repeatable; "
                             "comma-separated; none)")
    parser.add_argument("--allow-random-weights", action="store_true",
                        help="use a seeded random backbone when no weights are found (features not comparable)")
    parser.add_argument("--batch-size", type=int, default=4, help="snippets per forward pass (each with all its views)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda[:N]")
    parser.add_argument("--spatial-scale", type=float, default=1.0, help="below 1 only for smoke runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random backbone")
    parser.add_argument("--published-clip", type=Path,
                        help="published clip features of the video (.npy): extract only the patch features")
    parser.add_argument("--flow", action="store_true",
                        help="add the preset's TV-L1 flow stream (arnet); slow on a CPU")
    args = parser.parse_args(argv)
    try:
        attrs = extract(args.frames, args.out, args.feature_set, weights=dict(args.weights),
                        weights_dir=args.weights_dir, weights_sha256=dict(args.weights_sha256),
                        allow_random_weights=args.allow_random_weights,
                        batch_size=args.batch_size, device=args.device, spatial_scale=args.spatial_scale,
                        seed=args.seed, published_clip=args.published_clip, flow=args.flow)
    except (WeightsMissingError, ChecksumMismatchError, UnpinnedWeightsError, PublishedFeaturesError,
            WeightsFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.out}: {attrs['n_snippets']} snippets from {attrs['n_frames']} frames, "
          f"backbones {attrs['backbones']}, {attrs['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
