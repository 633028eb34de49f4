"""Published I3D features: read them into our features layout, and compare our extraction with them.

``convert`` reads one video's published features into the HDF5 layout of ``pipelines.features.store``, so
a lab that downloaded them trains without extracting: RTFM's (Tian et al., ICCV 2021) ``<video>_i3d.npy``,
float32 (T, 10, 2048) snippet-first, AR-Net's (Wan et al., ICME 2020) ``<video>/feature.npy`` (T, 2048),
and SSRL's patch files ``<video>_patch<rows><cols>_i3d.npy`` (T, rows*cols, 2048). T must be what the
preset's snippet rule gives for the video's frame count (ceil(n/16) for RTFM, floor(n/16) for AR-Net): a
different T means the features belong to another decoding of the video, which is an error, not something
to trim.

``compare`` validates an extractor on a cluster: cosine similarity of our features and the published ones
per snippet and view, summarised per video and overall.

Run by hand::

    python -m pipelines.features.published convert CLIP.npy OUT.h5 (--frames FRAMES.h5 | --n-frames N) \\
        [--preset rtfm] [--patch 2x3=FILE ...] [--source-name DIR]
    python -m pipelines.features.published compare OURS PUBLISHED [--json OUT.json]
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipelines import json_text
from pipelines.atomic import atomic_path, write_text
from pipelines.features import store
from pipelines.features.presets import PRESETS, SSRL_PATCHES, n_snippets
from pipelines.frame_store import FrameReader
from pipelines.provenance import sha256_file, versions

# Snippets copied per block: the published arrays are memory-mapped, never read whole.
COPY_BLOCK = 256
# The clip presets whose published features exist with the preset's own snippet rule. Published
# "standard" Inception features (e.g. Finspire13's) take full windows only, T = floor(n/16), where
# i3d_standard loop-pads the tail: they are another feature, not this preset's.
PUBLISHED_PRESETS = ("rtfm", "arnet")


class PublishedFeaturesError(ValueError):
    """A published features file that is missing, malformed or disagrees with the video."""


def _folders(folders: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]


def find_clip_file(folders: str | Path | Sequence[str | Path], video: str) -> Path:
    """A video's published clip features, in the first folder holding them: RTFM's ``<video>_i3d.npy``, a
    bare ``<video>.npy``, or AR-Net's ``<video>/feature.npy``. Several folders serve a dataset whose published
    features come split (RTFM's train and test folders)."""
    candidates = [path for folder in _folders(folders)
                  for path in (folder / f"{video}_i3d.npy", folder / f"{video}.npy", folder / video / "feature.npy")]
    for path in candidates:
        if path.is_file():
            return path
    raise PublishedFeaturesError(f"{video}: no published features in {', '.join(map(str, _folders(folders)))} "
                                 f"(looked for {video}_i3d.npy, {video}.npy and {video}/feature.npy)")


def find_patch_file(folders: str | Path | Sequence[str | Path], video: str, grid: tuple[int, int]) -> Path:
    """SSRL's ``<video>_patch<rows><cols>_i3d.npy``, in a folder itself or one of its sub-folders
    (SSRL keeps each scale in its own, e.g. ``SH_PATCH23_i3d/``)."""
    name = f"{video}_patch{grid[0]}{grid[1]}_i3d.npy"
    for folder in _folders(folders):
        found = [folder / name] if (folder / name).is_file() else sorted(folder.glob(f"*/{name}"))
        if found:
            return found[0]
    raise PublishedFeaturesError(f"{video}: no published {grid[0]}x{grid[1]} patch features {name} in "
                                 f"{', '.join(map(str, _folders(folders)))}")


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise PublishedFeaturesError(f"{path}: not a readable .npy features array ({err})") from err


def _as_snippet_views(array: np.ndarray, path: Path) -> np.ndarray:
    """(T, views, D) from (T, views, D) or the one-view (T, D)."""
    if array.ndim == 2:
        return array[:, None, :]
    if array.ndim != 3:
        raise PublishedFeaturesError(f"{path}: expected (T, views, D) or (T, D) features, found shape {array.shape}")
    return array


def load_clip(path: Path, preset: str, n_frames: int) -> np.ndarray:
    """A published clip features file, memory-mapped as (T, views, D), after checking its views and D
    against the preset (AR-Net's: RGB then flow, 2048) and T against the preset's snippet rule for the
    video's frame count."""
    if preset not in PUBLISHED_PRESETS:
        raise ValueError(f"{preset}: no published features follow this preset (those of {', '.join(PUBLISHED_PRESETS)} do)")
    clip_preset = PRESETS[preset]
    clip = _as_snippet_views(_load(path), path)
    views, dim = clip_preset.n_crops, clip_preset.feature_dim
    if clip.shape[1] != views or clip.shape[2] != dim:
        hint = (f"; it looks crop-first ({clip.shape[0]}, T, D): transpose it to (T, {clip.shape[0]}, D)"
                if clip.shape[0] == views != clip.shape[1] else
                "; it looks like the RGB stream alone: extract the features instead (features.flow)"
                if clip_preset.flow_backbone and clip.shape[2] == dim // 2 else "")
        raise PublishedFeaturesError(
            f"{path}: shape {clip.shape}, but {preset} features are (T, {views}, {dim}) "
            f"({views} view{'s' if views > 1 else ''}){hint}")
    expected = n_snippets(clip_preset, n_frames)
    if clip.shape[0] != expected:
        raise PublishedFeaturesError(
            f"{path}: {clip.shape[0]} snippets, but the {preset} rule gives {expected} for the video's "
            f"{n_frames} frames (tail {clip_preset.snippets.tail}): the features come from another decoding")
    return clip


def copy_rows(array: np.ndarray, target: h5py.Dataset, source: Path) -> None:
    """Copy a (memory-mapped) array into a dataset block by block, as float32; a NaN or infinite
    value (a broken extraction) is refused with the file and snippet rather than trained on."""
    for start in range(0, array.shape[0], COPY_BLOCK):
        block = np.asarray(array[start : start + COPY_BLOCK], dtype=np.float32)
        bad = ~np.isfinite(block)
        if bad.any():
            raise PublishedFeaturesError(
                f"{source}: non-finite feature values, the first in snippet {start + np.argwhere(bad)[0][0]}")
        target[start : start + COPY_BLOCK] = block


def convert(clip_file: Path, out: Path, n_frames: int, preset: str = "rtfm",
            patch_files: Mapping[tuple[int, int], Path] | None = None, source_frames: Path | None = None) -> dict:
    """Write one video's published features (and patch features) in our layout; return the attributes."""
    patch_files = dict(patch_files or {})
    clip = load_clip(clip_file, preset, n_frames)
    patches = {}
    for grid, path in sorted(patch_files.items()):
        if grid not in SSRL_PATCHES.grids:
            raise ValueError(f"grid {grid} is not one of SSRL's {SSRL_PATCHES.grids}")
        array = _load(path)
        if array.ndim != 3 or array.shape != (clip.shape[0], grid[0] * grid[1], clip.shape[-1]):
            raise PublishedFeaturesError(
                f"{path}: expected ({clip.shape[0]}, {grid[0] * grid[1]}, {clip.shape[-1]}) patch features for a "
                f"{grid[0]}x{grid[1]} grid (the clip features' snippets and dimension), found {array.shape}")
        patches[grid] = array
    feature_set = store.feature_set_name(preset, SSRL_PATCHES.name if patches else None)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as handle:
        copy_rows(clip, store.create_dataset(handle, store.FEATURES, *clip.shape), clip_file)
        for grid, array in patches.items():
            target = store.create_dataset(handle, store.patch_dataset(grid), *array.shape)
            copy_rows(array, target, patch_files[grid])
            target.attrs["reconstructed"] = False
        attrs = {
            "format": store.FORMAT,
            "feature_set": feature_set,
            "origin": "published",
            "preset": preset,
            "tail": PRESETS[preset].snippets.tail,
            "n_frames": n_frames,
            "n_snippets": clip.shape[0],
            "backbones": {"upstream extractor": f"published features from {clip_file.parent}"},
            "missing_streams": [],
            "spatial_scale": 1.0,
            "patch_grids": [list(grid) for grid in patches],
            "patches_reconstructed": False,
            "published_files": {str(p): sha256_file(p) for p in [clip_file, *patch_files.values()]},
            "source_frames": str(source_frames) if source_frames else "",
            "versions": versions(),
        }
        store.write_attrs(handle, attrs)
    return attrs


@dataclass
class Comparison:
    """Cosine similarity of our and the published features of one video, per snippet and view."""

    video: str
    cosine: np.ndarray  # (min T, views)
    ours_snippets: int
    published_snippets: int


def cosine_similarity(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis; 0 where either vector is zero."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    norms = np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1)
    dots = (ours * theirs).sum(axis=-1)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def compare_video(ours_file: Path, published_file: Path) -> Comparison:
    """Compare one video, block by block, over the snippets both have."""
    published = _as_snippet_views(_load(published_file), published_file)
    with store.FeatureReader(ours_file) as reader:
        if reader.n_views != published.shape[1] or reader.feature_dim != published.shape[2]:
            raise PublishedFeaturesError(
                f"{ours_file} holds (T, {reader.n_views}, {reader.feature_dim}) features, {published_file} "
                f"(T, {published.shape[1]}, {published.shape[2]}): not the same kind of features")
        common = min(reader.n_snippets, published.shape[0])
        parts = [cosine_similarity(reader.features(start, min(stop, common)), published[start : min(stop, common)])
                 for start, stop in reader.blocks(COPY_BLOCK) if start < common]
        cosine = np.concatenate(parts) if parts else np.zeros((0, reader.n_views))
        return Comparison(Path(ours_file).stem, cosine, reader.n_snippets, published.shape[0])


def summarize(comparisons: list[Comparison]) -> dict:
    """Per-video mean and minimum cosine and the overall distribution (mean, median, 5th percentile, minimum,
    mean per view), with the videos whose snippet counts differ."""
    pooled = np.concatenate([c.cosine for c in comparisons]) if comparisons else np.zeros((0, 0))
    if pooled.size == 0:
        raise PublishedFeaturesError("no snippets to compare")
    return {
        "n_videos": len(comparisons),
        "n_snippets": int(pooled.shape[0]),
        "mean": float(pooled.mean()),
        "median": float(np.median(pooled)),
        "p05": float(np.percentile(pooled, 5)),
        "min": float(pooled.min()),
        "mean_per_view": [float(v) for v in pooled.mean(axis=0)],
        "snippet_count_mismatch": {c.video: [c.ours_snippets, c.published_snippets]
                                   for c in comparisons if c.ours_snippets != c.published_snippets},
        "videos": {c.video: {"mean": float(c.cosine.mean()), "min": float(c.cosine.min())}
                   for c in comparisons if c.cosine.size},
    }


def compare(ours: Path, published: Path) -> dict:
    """Compare a features file with a published file, or every ``<video>.h5`` of a folder with its published match."""
    ours, published = Path(ours), Path(published)
    if ours.is_file():
        target = published if published.is_file() else find_clip_file(published, ours.stem)
        return summarize([compare_video(ours, target)])
    files = sorted(ours.glob("*.h5"))
    if not files:
        raise PublishedFeaturesError(f"{ours}: no features files (*.h5)")
    return summarize([compare_video(path, find_clip_file(published, path.stem)) for path in files])


def _print_summary(summary: dict) -> None:
    for video, stats in sorted(summary["videos"].items()):
        print(f"{video}: mean cosine {stats['mean']:.4f}, min {stats['min']:.4f}")
    per_view = " ".join(f"{v:.3f}" for v in summary["mean_per_view"])
    print(f"{summary['n_videos']} videos, {summary['n_snippets']} snippets: mean {summary['mean']:.4f}, "
          f"median {summary['median']:.4f}, 5th percentile {summary['p05']:.4f}, min {summary['min']:.4f}; "
          f"mean per view: {per_view}")
    for video, (mine, theirs) in sorted(summary["snippet_count_mismatch"].items()):
        print(f"warning: {video}: {mine} snippets extracted, {theirs} published "
              f"(compared the first {min(mine, theirs)})")


def _patch_arg(text: str) -> tuple[tuple[int, int], Path]:
    grid, sep, path = text.partition("=")
    rows, x, cols = grid.partition("x")
    if not sep or not x or not (rows.isdigit() and cols.isdigit()):
        raise argparse.ArgumentTypeError("expected ROWSxCOLS=FILE, e.g. 2x3=01_001_patch23_i3d.npy")
    return (int(rows), int(cols)), Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert", help="one video's published features into a features file")
    conv.add_argument("clip", type=Path, help="the video's published clip features (.npy)")
    conv.add_argument("out", type=Path)
    count = conv.add_mutually_exclusive_group(required=True)
    count.add_argument("--frames", type=Path, help="the video's frames file (gives its frame count)")
    count.add_argument("--n-frames", type=int, help="the video's frame count")
    conv.add_argument("--preset", default="rtfm", choices=PUBLISHED_PRESETS,
                      help="the preset whose snippet rule the published features follow")
    conv.add_argument("--patch", type=_patch_arg, action="append", default=[], metavar="ROWSxCOLS=FILE")
    comp = commands.add_parser("compare", help="cosine similarity of our features and published ones")
    comp.add_argument("ours", type=Path, help="a features file or a folder of them")
    comp.add_argument("published", type=Path, help="the published .npy file or folder")
    comp.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            n_frames = args.n_frames
            if args.frames is not None:
                with FrameReader(args.frames) as reader:
                    n_frames = len(reader)
            attrs = convert(args.clip, args.out, n_frames, args.preset, dict(args.patch), args.frames)
            print(f"{args.out}: {attrs['n_snippets']} snippets of {attrs['feature_set']} from {args.clip}")
        else:
            summary = compare(args.ours, args.published)
            _print_summary(summary)
            if args.json:
                write_text(args.json, json_text.dumps(summary, indent=1))
    except PublishedFeaturesError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
