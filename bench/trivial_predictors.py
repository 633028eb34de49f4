"""Frame-level AUC of two trivial predictors on a one-class test set, at several resolutions.

What a frame-prediction method must beat at a given resolution, scored with the methods' own
protocols:

* copy-last-frame: predict frame t as frame t-1 and score it with LGN-Net's protocol (PSNR over
  the frame, per-video min-max, the first 4 frames of each video unscored);
* F4 - F0: the mean squared change over the 5-frame clip, scored with STD's protocol (reciprocal,
  per-video min-max, clip i paired with the label of frame i + 5).

Frames are converted exactly as the methods' clip loader does (``pipelines.frame_clips.convert``:
SIZE x SIZE, area interpolation when shrinking, RGB in [0, 1]).

Usage: ``python bench/trivial_predictors.py [--frames ../shared/data/ped2/testing/frames]
[--labels ../shared/data/ped2/frame_labels_ped2.npy] [--sizes 32 64 128 256]``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.frame_clips import FrameFormat, convert  # noqa: E402
from pipelines.frames import list_images  # noqa: E402
from pipelines.metrics import minmax_per_video  # noqa: E402

PED2 = REPO.parent / "shared" / "data" / "ped2"


def video_scores(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normality of frames 4.., anomaly of clips 0..n-6) for one video."""
    n = len(frames)
    copy_mse = np.array([np.mean((frames[t] - frames[t - 1]) ** 2) for t in range(4, n)])
    psnr = 10 * np.log10(1 / np.maximum(copy_mse, 1e-12))
    change = np.array([np.mean((frames[i + 4] - frames[i]) ** 2) for i in range(n - 5)])
    return minmax_per_video(psnr), 1 - minmax_per_video(1 / np.maximum(change, 1e-12))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, default=PED2 / "testing" / "frames", help="one frame folder per test video")
    parser.add_argument("--labels", type=Path, default=PED2 / "frame_labels_ped2.npy", help="frame labels, 1 = abnormal, videos concatenated")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    args = parser.parse_args()
    for path in (args.frames, args.labels):
        if not path.exists():
            sys.exit(f"error: {path} not found (the Ped2 test frames and labels; see ../shared/data/README.md)")
    labels = np.load(args.labels).reshape(-1)
    folders = sorted(p for p in args.frames.iterdir() if p.is_dir())
    originals = [[cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in list_images(folder)] for folder in folders]
    if sum(map(len, originals)) != len(labels):
        sys.exit(f"error: {sum(map(len, originals))} frames in {args.frames} but {len(labels)} labels in {args.labels}")
    print("size  copy-last-frame (LGN-Net protocol)  F4-F0 change (STD protocol)")
    for size in args.sizes:
        normality, anomaly, y_copy, y_change, offset = [], [], [], [], 0
        for frames in originals:
            small = convert(np.stack(frames), FrameFormat(size, "rgb", 0.0, 1.0)).numpy()
            y = labels[offset : offset + len(frames)]
            offset += len(frames)
            copy_score, change_score = video_scores(small)
            normality.append(copy_score)
            anomaly.append(change_score)
            y_copy.append(y[4:])
            y_change.append(y[5:])
        copy_auc = roc_auc_score(1 - np.concatenate(y_copy), np.concatenate(normality))
        change_auc = roc_auc_score(np.concatenate(y_change), np.concatenate(anomaly))
        print(f"{size:4d}  {100 * copy_auc:34.2f}  {100 * change_auc:27.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
