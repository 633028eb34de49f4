"""Rendering the synthetic demo dataset: videos with their labels and poses, and the split files.

The Snakemake rules call ``render_shard`` once per shard (a folder of consecutive videos of one split, one
job each, in parallel) and ``write_split_files`` once. Shards rather than single videos keep the DAG small:
a 1,000-video dataset is 40 rendering jobs at 25 videos per job, not 1,000. Everything is also reachable
from the command line::

    python -m pipelines.synthetic.generate shard --params-json '{"seed": 1}' --split test --shard shard_000 \\
        --videos-per-job 25 --out results/raw/synthetic/test/shard_000
    python -m pipelines.synthetic.generate video --params-json '{"seed": 1}' --split test --name test_000 \\
        --video test_000.mp4 --labels test_000.npy --poses test_000.json
    python -m pipelines.synthetic.generate splits --params-json '{}' --weak-split weak.csv --manifest manifest.json
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path
from pipelines.ffmpeg_tools import ffmpeg_version
from pipelines.synthetic.actors import Shape, actor_shape
from pipelines.synthetic.encode import EncodingError, container_of, encode_video
from pipelines.synthetic.params import (
    GENERATOR_VERSION,
    SHARD_RECORD,
    SPLITS,
    ParamsError,
    SyntheticParams,
    shard_files,
    shard_videos,
    video_index,
    video_names,
)
from pipelines.synthetic.plan import plan_video
from pipelines.synthetic.render import SensorNoise, draw_frame, drawn_in_frame, render_background
from pipelines.synthetic.scene import build_scene

WEAK_SPLIT_COLUMNS = ("video", "source_split", "weak_split", "video_label")


def render_video(params: SyntheticParams, split: str, name: str, video_out: Path, labels_out: Path,
                 poses_out: Path) -> None:
    """Renders video ``name`` of ``split``: H.264 video, per-frame labels (.npy) and ground-truth poses (.json).

    Labels are uint8, one per frame, 1 while an anomalous actor is visible. Poses follow AlphaPose's tracked
    person layout as STG-NF reads it: ``{person_id: {frame: {"keypoints": [x, y, c] * 17, "scores": s}}}``
    with zero-padded frame numbers counted from 0, confidence 1 for joints inside the frame and 0 outside,
    and a person present in exactly the frames where it is visible. Each file is written under a temporary
    name and renamed only once everything has succeeded, so a failure leaves no partial output.
    """
    video_out, labels_out, poses_out = Path(video_out), Path(labels_out), Path(poses_out)
    scene = build_scene(params)
    plan = plan_video(params, scene, split, video_index(params, split, name))
    background = render_background(scene)
    noise = SensorNoise(background.shape, np.random.default_rng(plan.noise_seed))
    camera = scene.camera
    frame_digits = max(4, len(str(plan.n_frames - 1)))
    poses: dict[str, dict[str, dict]] = {}

    def frames():
        for frame in range(plan.n_frames):
            shapes = [actor_shape(actor, frame, camera) for actor in plan.actors_at(frame)]
            for shape in shapes:
                if shape.keypoints is not None and drawn_in_frame(shape, camera.width, camera.height):
                    person = poses.setdefault(str(shape.actor.person_id), {})
                    person[f"{frame:0{frame_digits}d}"] = _pose_entry(shape, camera.width, camera.height)
            yield draw_frame(background, shapes, noise)

    container = container_of(video_out)  # before rendering, so a bad name fails fast
    with contextlib.ExitStack() as stack:
        video_part, labels_part, poses_part = (stack.enter_context(atomic_path(target))
                                               for target in (video_out, labels_out, poses_out))
        encode_video(frames(), video_part, container, params.width, params.height, params.fps, name_in_errors=video_out)
        with open(labels_part, "wb") as f:
            np.save(f, plan.labels)
        # Persons ordered by id, as trackers number them.
        ordered = {pid: poses[pid] for pid in sorted(poses, key=int)}
        poses_part.write_text(json.dumps(ordered, separators=(",", ":")))


def render_shard(params: SyntheticParams, split: str, shard: str, videos_per_job: int, out_dir: Path) -> list[str]:
    """Renders every video of one shard of ``split`` into the folder ``out_dir`` (see ``shard_files``),
    with ``SHARD_RECORD`` listing them (what lets the workflow tell a file deleted by hand from a shard
    rendered under other settings).

    The folder is built under a temporary name and renamed when all its videos are done, so a killed job
    leaves no folder that looks complete. Returns the names rendered.
    """
    names = shard_videos(params, split, shard, videos_per_job)
    if Path(out_dir).exists():
        raise ParamsError(f"{out_dir}: already exists; a shard is written whole, remove the old one first")
    with atomic_path(out_dir) as folder:
        folder.mkdir()
        for name in names:
            render_video(params, split, name, *shard_files(folder, name))
        (folder / SHARD_RECORD).write_text(json.dumps({"videos": names}))
    return names


def _pose_entry(shape: Shape, width: int, height: int) -> dict:
    # Rounded first, so that a joint written as inside the frame really is.
    x, y = np.round(shape.keypoints[:, 0], 2), np.round(shape.keypoints[:, 1], 2)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    keypoints = np.stack([x, y, inside.astype(float)], axis=1)
    return {"keypoints": keypoints.ravel().tolist(), "scores": round(float(inside.mean()), 4)}


def write_split_files(params: SyntheticParams, weak_split_out: Path, manifest_out: Path) -> None:
    """Writes the weakly-supervised split (CSV) and the dataset manifest (JSON), without rendering.

    Weak split: all normal and abnormal training videos form "train", the test videos form "test";
    ``video_label`` is 1 when any frame of the video is abnormal. The manifest records the params, the
    generator and ffmpeg versions, and per video its split, length and anomaly events.
    """
    weak_split_out, manifest_out = Path(weak_split_out), Path(manifest_out)
    scene = build_scene(params)
    names = video_names(params)
    rows, videos = [], {}
    for split in ("train", "train_abnormal", "test"):
        for index, name in enumerate(names[split]):
            plan = plan_video(params, scene, split, index)
            rows.append((name, split, "test" if split == "test" else "train", int(plan.labels.any())))
            videos[name] = {"split": split, "n_frames": plan.n_frames, "events": [asdict(e) for e in plan.events]}
    manifest = {
        "generator": GENERATOR_VERSION,
        "ffmpeg": ffmpeg_version(),
        "params": asdict(params),
        "labels": "uint8 per frame, 1 = abnormal (an anomalous actor is visible)",
        "events": "frames [start, end) in which the event's actor (person_id in the poses; null for a car) is visible",
        "videos": videos,
    }
    with atomic_path(weak_split_out) as split_part, atomic_path(manifest_out) as manifest_part:
        with open(split_part, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(WEAK_SPLIT_COLUMNS)
            writer.writerows(rows)
        manifest_part.write_text(json.dumps(manifest, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.synthetic.generate", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    shard = commands.add_parser("shard", help="render one shard (a folder of videos with their labels and poses)")
    video = commands.add_parser("video", help="render one video with its labels and poses")
    splits = commands.add_parser("splits", help="write the weak split CSV and the manifest")
    for command in (shard, video, splits):
        command.add_argument("--params-json", default="{}", help="SyntheticParams as a JSON object (default: {})")
    shard.add_argument("--split", required=True, choices=SPLITS)
    shard.add_argument("--shard", required=True, help="shard name, e.g. shard_000")
    shard.add_argument("--videos-per-job", required=True, type=int, help="videos per shard")
    shard.add_argument("--out", required=True, type=Path, help="output folder (must not exist)")
    video.add_argument("--split", required=True, choices=SPLITS)
    video.add_argument("--name", required=True, help="video name, e.g. test_000")
    video.add_argument("--video", required=True, type=Path, help="output video (.mp4, .mkv or .avi)")
    video.add_argument("--labels", required=True, type=Path, help="output frame labels (.npy)")
    video.add_argument("--poses", required=True, type=Path, help="output poses (.json)")
    splits.add_argument("--weak-split", required=True, type=Path, help="output weak split (.csv)")
    splits.add_argument("--manifest", required=True, type=Path, help="output manifest (.json)")
    args = parser.parse_args(argv)
    try:
        values = json.loads(args.params_json)
        if not isinstance(values, dict):
            raise ParamsError(f"--params-json must be a JSON object, found {type(values).__name__}")
        params = SyntheticParams.from_mapping(values)
        if args.command == "shard":
            names = render_shard(params, args.split, args.shard, args.videos_per_job, args.out)
            print(f"{args.out}: {len(names)} videos ({names[0]} .. {names[-1]})")
        elif args.command == "video":
            render_video(params, args.split, args.name, args.video, args.labels, args.poses)
        else:
            write_split_files(params, args.weak_split, args.manifest)
    except (json.JSONDecodeError, ParamsError, EncodingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
