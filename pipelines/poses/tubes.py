"""Person-tube I3D features of pose segments, the input GENet explores, cached in one HDF5 per video.

GENet (Yang et al., ACM MM 2024) reads, for every pose segment, the I3D Mixed_5c feature map of the
person's tube: per frame, the keypoint box enlarged by 20 % of its width and height on each side is
cropped (``tool/excrop.py``, alpha 0.2), the crops of the segment's frames form a clip, and the RGB
Inception I3D (Carreira & Zisserman, CVPR 2017) turns it into a (1024, T/8, 3, 3) map. The authors
never published their extractor or features; here the crops are square-resized to ``crop_size``
(96 gives the 3x3 map directly) and scaled to [-1, 1] as DeepMind's I3D expects, and the map is
average-pooled to (T/8, 3, 3) if another crop size is chosen.

Layout: ``poses`` (S, 3, T, 18) float32 (OpenPose order, pixels and confidence), ``track_ids`` (S,),
``start_frames`` (S,), ``features`` (S, 1024, T/8, 3, 3) float16; attributes: the window and crop
settings, the backbone's weights checksum ("random-init" when no Kinetics weights were given and
random weights were explicitly allowed), and the poses file's sha256.

Run by hand: ``python -m pipelines.poses.tubes POSES.h5 FRAMES.h5 OUT.h5 --settings-json J
[--batch-size B] [--weights rgb_imagenet.pt] [--allow-random-backbone] [--seed S] [--dataset NAME]``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import h5py
import hdf5plugin
import numpy as np
import torch
import torch.nn.functional as F

from pipelines.atomic import atomic_path
from pipelines.features.registry import REGISTRY
from pipelines.features.weights import cached_weights, load_backbone
from pipelines.frame_store import FrameReader
from pipelines.poses.segment_data import SegmentBank, WindowSettings
from pipelines.poses.store import keypoint_boxes, read_poses
from pipelines.provenance import sha256_file, versions

FORMAT = "vadbench-tubes-1"
BACKBONE = "inception_k400_rgb"
TUBE_GRID = (3, 3)


@dataclass(frozen=True)
class TubeSettings:
    window: WindowSettings
    margin: float = 0.2  # box enlargement on each side, as a fraction of its width / height
    crop_size: int = 96  # square side every per-frame crop is resized to
    batch_size: int = 8  # segments per backbone forward pass


def tube_weights(params: dict) -> str | None:
    """The Kinetics I3D weights file the person tubes of a method's parameters (one dataset's) are taken
    with: ``i3d_weights``, else rgb_imagenet.pt in ``i3d_cache_dir`` when it is there; None when neither
    (a seeded random backbone, where ``allow_random_backbone`` allows it)."""
    if params.get("i3d_weights"):
        return str(params["i3d_weights"])
    found = cached_weights(REGISTRY[BACKBONE], params.get("i3d_cache_dir"))
    return str(found) if found else None


def tube_boxes(keypoints: np.ndarray, margin: float) -> np.ndarray:
    """(N, 17, 3) keypoints -> (N, 4) boxes around them, enlarged by ``margin`` x size on every side."""
    boxes = keypoint_boxes(keypoints)
    size = np.maximum(boxes[:, 2:] - boxes[:, :2], 2.0)
    return np.concatenate([boxes[:, :2] - margin * size, boxes[:, 2:] + margin * size], axis=1)


def _crop(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The (size, size, 3) uint8 crop of ``box`` from ``image``, square-resized; outside is black."""
    x1, y1, x2, y2 = box
    scale_x, scale_y = size / (x2 - x1), size / (y2 - y1)
    matrix = np.array([[scale_x, 0, -x1 * scale_x], [0, scale_y, -y1 * scale_y]], np.float32)
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return np.repeat(crop[..., None], 3, axis=2) if crop.ndim == 2 else crop


class DetectionCrops:
    """Crops of a video's detections, made as its frames stream past and dropped once no later
    segment needs them: with segments taken in order of their first frame, memory holds the crops
    of at most ``horizon`` frames (plus a read block) past the current window's first frame,
    whatever the video's length. A window that bridges a longer gap (STG-NF's released continuity
    rule can) has its far frames read one by one instead of streaming the gap."""

    def __init__(self, reader: FrameReader, frames: np.ndarray, boxes: np.ndarray, size: int, horizon: int = 256):
        self.frames, self.boxes, self.size, self.horizon = np.asarray(frames), np.asarray(boxes), size, horizon
        self._reader = reader
        self._blocks = reader.blocks()
        self._by_frame: dict[int, list[int]] = {}
        for row, frame in enumerate(self.frames):
            self._by_frame.setdefault(int(frame), []).append(row)
        self._cropped_to = 0  # frames before this one have been read
        self._crops: dict[int, np.ndarray] = {}
        if self.frames.size and self.frames.max() >= len(reader):
            raise ValueError(f"{reader.path}: a detection in frame {int(self.frames.max())}, but the video has "
                             f"{len(reader)} frames: the poses belong to another video")

    def __len__(self) -> int:
        """How many crops are held now."""
        return len(self._crops)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """(*rows.shape, size, size, 3) crops of the detections ``rows``; frames are streamed forward
        up to ``horizon`` past the first one asked for, and read alone beyond it."""
        rows = np.asarray(rows)
        flat = rows.reshape(-1)
        if not flat.size:
            return np.zeros((*rows.shape, self.size, self.size, 3), np.uint8)
        frames = self.frames[flat]
        stream_to = min(int(frames.max()), int(frames.min()) + self.horizon)
        while self._cropped_to <= stream_to:
            start, block = next(self._blocks)
            for offset, image in enumerate(block):
                for row in self._by_frame.pop(start + offset, ()):
                    self._crops[row] = _crop(image, self.boxes[row], self.size)
            self._cropped_to = start + len(block)
        crops = [self._crops[int(row)] if int(row) in self._crops
                 else _crop(self._reader.clip(int(frame), 1)[0], self.boxes[row], self.size)
                 for row, frame in zip(flat, frames)]
        return np.stack(crops).reshape(*rows.shape, self.size, self.size, 3)

    def forget_before(self, frame: int) -> None:
        """Drop the crops of detections in frames before ``frame`` (no later segment reads them)."""
        for row in [row for row in self._crops if self.frames[row] < frame]:
            del self._crops[row]


def crops_in_start_order(bank: SegmentBank, crops: DetectionCrops, batch_size: int):
    """Yield (segment index, (B, T, size, size, 3) crops) batches in order of the segments' first
    frames, so the frames stream past once; after each batch the crops no later segment reads are
    dropped."""
    order = np.argsort(bank.start_frames, kind="stable")
    for start in range(0, len(bank), batch_size):
        index = order[start : start + batch_size]
        yield index, crops.take(bank.rows(index))
        if start + batch_size < len(bank):
            crops.forget_before(int(bank.start_frames[order[start + batch_size]]))


def crop_detections(reader: FrameReader, frames: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 crops of each detection's box from its frame, all at once (small inputs)."""
    return DetectionCrops(reader, frames, boxes, size).take(np.arange(len(frames)))


@torch.no_grad()
def tube_features(backbone: torch.nn.Module, clips: np.ndarray, seg_len: int, device: str) -> np.ndarray:
    """(B, T, h, w, 3) uint8 clips -> (B, 1024, T/8, 3, 3) float32 Mixed_5c maps."""
    x = torch.from_numpy(clips).to(device).permute(0, 4, 1, 2, 3).float()
    x = (x - 127.5) / 127.5
    maps = backbone.feature_map(x)
    target = (seg_len // 8, *TUBE_GRID)
    if tuple(maps.shape[2:]) != target:
        maps = F.adaptive_avg_pool3d(maps, target)
    return maps.cpu().numpy()


def extract(poses_file: Path, frames_file: Path, out: Path, settings: TubeSettings, backbone: torch.nn.Module,
            dataset: str = "") -> int:
    """Write the tubes file of one video; returns the number of segments."""
    if settings.window.seg_len % 8:
        raise ValueError(f"seg_len {settings.window.seg_len}: GENet needs a multiple of 8 (I3D's temporal stride)")
    device = next(backbone.parameters()).device.type
    tracks, _ = read_poses(poses_file)
    bank = SegmentBank([tracks], settings.window)
    seg_len = settings.window.seg_len
    feature_shape = (1024, seg_len // 8, *TUBE_GRID)
    blosc = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)
    # Segments are taken in order of their first frame; rows are written back to the bank's order
    # (by track, then start).
    with FrameReader(frames_file) as reader, atomic_path(out) as tmp, h5py.File(tmp, "w") as handle:
        crops = DetectionCrops(reader, tracks.frames, tube_boxes(tracks.keypoints, settings.margin),
                               settings.crop_size)
        poses = handle.create_dataset("poses", shape=(len(bank), 3, seg_len, 18), dtype=np.float32,
                                      chunks=(1, 3, seg_len, 18) if len(bank) else None)
        handle.create_dataset("track_ids", data=bank.track_ids)
        handle.create_dataset("start_frames", data=bank.start_frames)
        features = handle.create_dataset("features", shape=(len(bank), *feature_shape), dtype=np.float16,
                                         chunks=(1, *feature_shape), **blosc)
        for index, clips in crops_in_start_order(bank, crops, settings.batch_size):
            maps = tube_features(backbone, clips, seg_len, device).astype(np.float16)
            sort = np.argsort(index)  # h5py writes rows in increasing order
            features[index[sort]] = maps[sort]
            poses[index[sort]] = bank.poses(index[sort]).astype(np.float32)
        handle.attrs.update({
            "format": FORMAT,
            "dataset": dataset,
            "n_frames": tracks.n_frames,
            "frame_width": tracks.frame_size[0],
            "frame_height": tracks.frame_size[1],
            # How many segments a forward pass takes changes no number (evaluation mode): left out, so
            # that the file's bytes depend only on what it was made from.
            "settings": json.dumps({k: v for k, v in asdict(settings).items() if k != "batch_size"}, sort_keys=True),
            "backbone": BACKBONE,
            "backbone_weights": getattr(backbone, "weights_checksum", "unknown"),
            "poses_file": str(poses_file),
            "poses_sha256": sha256_file(poses_file),
            "versions": json.dumps(versions(), sort_keys=True),
        })
    return len(bank)


@dataclass
class Tubes:
    """A tubes file read into memory, features excepted (read on demand)."""

    path: Path
    poses: np.ndarray
    track_ids: np.ndarray
    start_frames: np.ndarray
    n_frames: int
    feature_shape: tuple[int, ...]
    attrs: dict

    def features(self, index: np.ndarray) -> np.ndarray:
        """(B, 1024, T', 3, 3) float32 feature maps of the segments ``index`` (any order, repeats allowed:
        h5py reads each row once, in increasing order)."""
        index = np.asarray(index)
        if index.size == 0:
            return np.zeros((0, *self.feature_shape), np.float32)
        rows, where = np.unique(index, return_inverse=True)
        with h5py.File(self.path, "r") as handle:
            data = handle["features"][rows]
        return data[where.reshape(-1)].astype(np.float32, copy=False)


def read_tubes(path: str | Path) -> Tubes:
    with h5py.File(path, "r") as handle:
        if handle.attrs.get("format") != FORMAT:
            raise ValueError(f"{path}: not a person-tubes file")
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in handle.attrs.items()}
        return Tubes(Path(path), handle["poses"][()], handle["track_ids"][()], handle["start_frames"][()],
                     int(attrs["n_frames"]), tuple(handle["features"].shape[1:]), attrs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("poses", type=Path, help="the video's poses file")
    parser.add_argument("frames", type=Path, help="the video's frames file")
    parser.add_argument("out", type=Path)
    parser.add_argument("--settings-json", required=True,
                        help="seg_len, stride, max_missing, released_rule, frame_size, margin, crop_size")
    parser.add_argument("--batch-size", type=int, default=TubeSettings.batch_size,
                        help="segments per I3D forward pass (in evaluation mode: no feature depends on it)")
    parser.add_argument("--weights", type=Path, help="Kinetics RGB I3D weights (rgb_imagenet.pt)")
    parser.add_argument("--cache-dir", type=Path, help="folder where the weights may already be")
    parser.add_argument("--allow-random-backbone", action="store_true",
                        help="without weights, use a seeded random I3D (recorded as random-init)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default="")
    args = parser.parse_args(argv)
    values = json.loads(args.settings_json)
    window = WindowSettings(values["seg_len"], values["stride"], values["max_missing"], values["released_rule"],
                            tuple(values["frame_size"]))
    settings = TubeSettings(window, values["margin"], values["crop_size"], args.batch_size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone = load_backbone(BACKBONE, args.weights, args.allow_random_backbone, cache_dir=args.cache_dir,
                             seed=args.seed).to(device)
    n = extract(args.poses, args.frames, args.out, settings, backbone, args.dataset)
    print(f"{args.out}: {n} person tubes, backbone weights {backbone.weights_checksum}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
