"""Frame storage benchmark: extraction and clip reading, as ratios to baselines run in the same process.

1. Extraction: our ``pipelines.frames.extract`` (ffmpeg -> pipe -> compressed HDF5) against ffmpeg
   alone decoding the same video to raw frames of the stored size and pixel format into a pipe
   that is read and discarded (target: ratio >= 0.8), and against ``ffmpeg -i VIDEO -f null -``.
   Frame folders (Ped2) are decoded by libjpeg-turbo (simplejpeg) in our pipeline, one thread per
   CPU this process may use; their ffmpeg baseline decodes the same JPEG sequence with ffmpeg's image2 demuxer (ffmpeg
   picks its threads from the same CPUs). Each source is stored in the pixel format its config
   stores: the synthetic video and ``vtest.avi`` in colour (the default), Ped2 grey
   (``configs/ped2.yaml``; its JPEG baseline is then read as grey too).
2. Per compression: the extraction ratio again, and clip reading: 16 consecutive frames at random
   starts from our HDF5 against reading the same frames from a JPEG folder with OpenCV (target: ratio >= 3), with the
   storage of each.
3. No-op rerun: the time of ``snakemake`` with nothing to do on an N-video synthetic dataset
   (target: under 5 s for 1,000 videos), the median of several, each beside Snakemake's bare start
   (``snakemake --version``). The first, real run of that DAG takes a while.

Usage: ``python bench/frames_bench.py [--rerun-videos 1000] [--rerun-repeats 5] [--skip-rerun]``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.ffmpeg_tools import ffmpeg_exe, probe  # noqa: E402
from pipelines.frame_store import COMPRESSIONS, FrameReader  # noqa: E402
from pipelines.frames import FrameParams, extract, list_images  # noqa: E402
from pipelines.synthetic.generate import SyntheticParams, render_video  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def best_of(fn, repeats: int = 3, before=None) -> float:
    """Fastest wall time of a few runs: the least disturbed by other load. ``before`` runs untimed
    ahead of each run."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def ffmpeg_raw_pipe(source: Path, pix_fmt: str, folder_pattern: str | None) -> int:
    """ffmpeg alone: decode to raw frames into a pipe that is read and discarded; return frames."""
    inputs = ["-f", "image2", "-i", folder_pattern] if folder_pattern else ["-i", str(source)]
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", *inputs, "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    total = 0
    while chunk := proc.stdout.read(1 << 22):
        total += len(chunk)
    proc.wait()
    return total


def ffmpeg_null(source: Path, folder_pattern: str | None) -> None:
    inputs = ["-f", "image2", "-i", folder_pattern] if folder_pattern else ["-i", str(source)]
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", *inputs, "-f", "null", "-"], check=True)


def jpeg_folder_of(h5: Path, folder: Path) -> list[Path]:
    """The frames of an HDF5 file as a JPEG folder (quality 95), the layout most VAD code reads;
    grey frames as grey JPEGs."""
    folder.mkdir(parents=True, exist_ok=True)
    with FrameReader(h5) as reader:
        for start, block in reader.blocks():
            for i, frame in enumerate(block):
                image = frame[..., 0] if frame.shape[-1] == 1 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
                cv2.imwrite(str(folder / f"{start + i:05d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return list_images(folder)


def clip_reads(n_frames: int, n_clips: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_frames - 16, n_clips)


def read_h5_clips(h5: Path, starts) -> None:
    with FrameReader(h5) as reader:
        for s in starts:
            reader.clip(int(s), 16)


def read_jpeg_clips(files: list[Path], starts, pixel_format: str) -> None:
    flag = cv2.IMREAD_GRAYSCALE if pixel_format == "gray" else cv2.IMREAD_COLOR
    for s in starts:
        np.stack([cv2.imread(str(files[i]), flag) for i in range(s, s + 16)])


def bench_source(name: str, source: Path, work: Path, pixel_format: str) -> dict:
    """Both parts for one source, stored in ``pixel_format`` (the one its config stores)."""
    folder_pattern = None
    if source.is_dir():
        files = list_images(source)
        folder_pattern = str(source / f"%0{len(files[0].stem)}d{files[0].suffix}")
        n_pixels = cv2.imread(str(files[0])).shape[:2]
    else:
        info = probe(source)
        n_pixels = (info.height, info.width)
    out = work / f"{name}.h5"
    # Snakemake removes a job's old output before the job runs; unlinking a large file is slow on
    # some filesystems, so it happens untimed here too.
    params = FrameParams(pixel_format=pixel_format)
    ours = best_of(lambda: extract(source, out, params), before=lambda: out.unlink(missing_ok=True))
    with FrameReader(out) as reader:
        n = len(reader)
    raw = best_of(lambda: ffmpeg_raw_pipe(source, pixel_format, folder_pattern))
    null = best_of(lambda: ffmpeg_null(source, folder_pattern))
    row = {
        "source": name, "frames": n, "size": f"{n_pixels[1]}x{n_pixels[0]}", "pixel_format": pixel_format,
        "extract_fps": n / ours, "ratio_vs_raw_pipe": raw / ours, "ratio_vs_null": null / ours,
    }
    jpegs = jpeg_folder_of(out, work / f"{name}_jpeg")
    starts = clip_reads(n)[:60]  # both sides read the same 60 clips
    jpeg_time = best_of(lambda: read_jpeg_clips(jpegs, starts, pixel_format), 2) / len(starts)
    row["jpeg_clip_ms"] = 1e3 * jpeg_time
    row["jpeg_MB"] = sum(p.stat().st_size for p in jpegs) / 1e6
    for compression in COMPRESSIONS:
        path = work / f"{name}_{compression}.h5"
        row[f"extract_ratio_{compression}"] = raw / best_of(
            lambda: extract(source, path, replace(params, compression=compression)), 2,
            before=lambda: path.unlink(missing_ok=True))
        h5_time = best_of(lambda: read_h5_clips(path, starts), 2) / len(starts)
        row[f"clip_ratio_{compression}"] = jpeg_time / h5_time
        row[f"MB_{compression}"] = path.stat().st_size / 1e6
    return row


def _timed(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc.stdout + proc.stderr


def noop_rerun(n_videos: int, work: Path, repeats: int) -> dict:
    """Wall time of no-op reruns on an N-video synthetic dataset (after one real run), each followed by
    Snakemake's bare start (``snakemake --version``): the machine's own speed drifts, so the two are
    taken in alternation and reported side by side."""
    import yaml

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"]["synthetic"].update(n_train=2, n_test=n_videos, n_train_abnormal=1, n_frames=16, height=32, width=48)
    for method, entry in config["methods"].items():
        entry["enabled"] = method == "tde"
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = [sys.executable, "-m", "snakemake"]
    cmd = snakemake + ["--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(work),
                       "--configfile", str(work / "config.yaml"), "--cores", "2", "--quiet"]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    first, _ = _timed(cmd, env)
    reruns, starts = [], []
    for _ in range(repeats):
        seconds, out = _timed(cmd, env)
        assert "Nothing to be done" in out, out[-2000:]
        reruns.append(seconds)
        starts.append(_timed(snakemake + ["--version"], env)[0])
    return {"videos": n_videos + 2, "first_run_s": first, "noop_rerun_s": float(np.median(reruns)),
            "noop_reruns_s": reruns, "snakemake_start_s": starts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rerun-videos", type=int, default=1000)
    parser.add_argument("--rerun-repeats", type=int, default=5, help="no-op reruns to time (the median is reported)")
    parser.add_argument("--skip-rerun", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synthetic = work / "synthetic.mp4"
        params = SyntheticParams(n_frames=300, height=240, width=320)
        render_video(params, "test", "test_000", synthetic, work / "l.npy", work / "p.json")
        # Each source in the pixel format its config stores: colour by default, Ped2 grey (configs/ped2.yaml).
        sources = {"synthetic": (synthetic, "rgb24")}
        if DATA.is_dir():
            sources |= {"vtest.avi": (DATA / "videos" / "vtest.avi", "rgb24"),
                        "ped2_test_01": (DATA / "ped2" / "testing" / "frames" / "01", "gray")}
        else:
            print(f"note: {DATA} not found; benchmarking the synthetic video only")
        for name, (source, pixel_format) in sources.items():
            rows.append(bench_source(name, source, work, pixel_format))
            print_row(rows[-1])
        rerun = None if args.skip_rerun else noop_rerun(args.rerun_videos, work / "rerun", args.rerun_repeats)
    if rerun:
        runs, starts = rerun["noop_reruns_s"], rerun["snakemake_start_s"]
        print(f"\nno-op rerun on {rerun['videos']} synthetic videos: median {rerun['noop_rerun_s']:.2f} s, "
              f"{min(runs):.2f}-{max(runs):.2f} s over {len(runs)} runs (target < 5 s); Snakemake's bare start "
              f"(`snakemake --version`, after each) {min(starts):.2f}-{max(starts):.2f} s; "
              f"the first, real run took {rerun['first_run_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"sources": rows, "rerun": rerun}, indent=1))
    return 0


def print_row(row: dict) -> None:
    print(f"\n{row['source']} ({row['frames']} frames, {row['size']}, {row['pixel_format']}):")
    print(f"  extraction {row['extract_fps']:.0f} frames/s; ratio to ffmpeg raw pipe {row['ratio_vs_raw_pipe']:.2f} "
          f"(target >= 0.8); ratio to ffmpeg -f null {row['ratio_vs_null']:.2f}")
    print(f"  clip of 16 from JPEG folder (OpenCV): {row['jpeg_clip_ms']:.2f} ms, {row['jpeg_MB']:.1f} MB")
    for compression in COMPRESSIONS:
        print(f"  HDF5 {compression:6s}: extraction ratio {row[f'extract_ratio_{compression}']:4.2f}, clip read ratio "
              f"{row[f'clip_ratio_{compression}']:5.2f} (target >= 3), {row[f'MB_{compression}']:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
