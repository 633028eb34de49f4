"""Write a dataset split's canonical labels file from the dataset's own label files.

The frame count of every video comes from its frames file, so a label file that disagrees
with the decoded video stops here with the video named and both counts. Output (HDF5):
``labels/<video>`` uint8 per frame (1 = abnormal) with a ``video_label`` attribute; file
attributes record the dataset, its config entry, the split, the label convention, the sha256 of
each label file and the versions.

Run by hand: ``python -m pipelines.labels DATASET SPLIT OUT.h5 FRAMES.h5 ... --config-json '{...}'``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np

from pipelines import h5attrs
from pipelines.atomic import atomic_path
from pipelines.datasets import DatasetError, LabelError, get_adapter
from pipelines.ffmpeg_tools import VideoError
from pipelines.frame_store import FrameReader
from pipelines.frame_count import COUNT_SUFFIX, read_frame_count
from pipelines.provenance import sha256_file, versions

LABELS = "labels"


def frame_counts(frames_files: list[Path]) -> dict[str, int]:
    """Frame count per video, read from the frames files (``<video>.h5``) or from the counts the frames
    jobs write beside them (``<video>.n_frames.json``)."""
    counts = {}
    for path in map(Path, frames_files):
        if path.name.endswith(COUNT_SUFFIX):
            counts[path.name[: -len(COUNT_SUFFIX)]] = read_frame_count(path)
        else:
            with FrameReader(path) as reader:
                counts[path.stem] = len(reader)
    return counts


def check_covers_split(dataset: str, split: str, given: set[str], videos: set[str]) -> None:
    """Refuse frames files that are not exactly the split's videos: a labels file for part of a split
    would score the rest as absent, and one for a stray video would label something the split lacks."""
    missing, extra = sorted(videos - given), sorted(given - videos)
    if missing or extra:
        raise LabelError(
            f"{dataset}/{split}: the frames files given are not the split's {len(videos)} videos"
            + (f"; missing {len(missing)}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else "")
            + (f"; not in the split: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}" if extra else "")
        )


def write_labels(dataset: str, split: str, config: dict, frames_files: list[Path], out: Path) -> dict[str, np.ndarray]:
    """Build and write the canonical labels of one split; return them."""
    adapter = get_adapter(dataset, config)
    counts = frame_counts(frames_files)
    check_covers_split(dataset, split, set(counts), {video.name for video in adapter.videos(split)})
    labels = adapter.frame_labels(split, counts)
    video_labels = adapter.video_labels(split, labels)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as handle:
            group = handle.create_group(LABELS)
            for name in sorted(labels):
                data = group.create_dataset(name, data=labels[name], dtype=np.uint8)
                data.attrs["video_label"] = int(video_labels[name])
            h5attrs.write(
                handle.attrs,
                {
                    "dataset": dataset,
                    "split": split,
                    "config": config,  # the dataset's entry: its paths, and a generated dataset's seed and size
                    "label_convention": adapter.split_label_convention(split),
                    "label_files": {str(p): sha256_file(p) for p in adapter.label_files(split)},
                    "n_videos": len(labels),
                    "n_frames": int(sum(v.size for v in labels.values())),
                    "n_abnormal_frames": int(sum(int(v.sum()) for v in labels.values())),
                    "versions": versions(),
                },
            )
    return labels


def read_labels(path: Path) -> tuple[dict[str, np.ndarray], dict[str, int], dict]:
    """(frame labels per video, video labels, file attributes) of a canonical labels file."""
    try:
        with h5py.File(path, "r") as handle:
            frames = {name: data[()] for name, data in handle[LABELS].items()}
            videos = {name: int(data.attrs["video_label"]) for name, data in handle[LABELS].items()}
            attrs = h5attrs.read(handle.attrs)
    except (OSError, KeyError, TypeError, AttributeError) as err:
        raise LabelError(f"{path}: not a readable canonical labels file ({err}); "
                         "delete it and rerun its labels job") from None
    if "label_convention" not in attrs:
        raise LabelError(f"{path}: a labels file without its label_convention attribute; rerun its labels job")
    return frames, videos, attrs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("split")
    parser.add_argument("out", type=Path)
    parser.add_argument("frames", type=Path, nargs="+",
                        help="frames files (or the frames jobs' <video>.n_frames.json counts) of every video of the split")
    parser.add_argument("--config-json", default="{}", help="the dataset's config entry as JSON")
    args = parser.parse_args(argv)
    try:
        labels = write_labels(args.dataset, args.split, json.loads(args.config_json), args.frames, args.out)
    except (DatasetError, LabelError, VideoError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    n = sum(v.size for v in labels.values())
    print(f"{args.out}: {len(labels)} videos, {n} frames, {sum(int(v.sum()) for v in labels.values())} abnormal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
