"""Decode one video (ffmpeg) or one frame folder (libjpeg-turbo for JPEGs, OpenCV for the rest) into a frames HDF5 file.

Streaming: frames travel from ffmpeg's pipe to HDF5 in fixed-size blocks, so memory does
not grow with the video's length. The output is written under a temporary name and
renamed when complete. A video that ffmpeg reports as damaged, or that yields no frame,
is an error naming the file; nothing is written for it. One whose frames end clearly before the
length it declares is stored with a warning (``pipelines.declared_length``).

Run by hand: ``python -m pipelines.frames SOURCE OUT.h5 [--size H W] [--pixel-format gray]``.
"""
from __future__ import annotations

import argparse
import fcntl
import queue
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import ffmpeg
import numpy as np
import simplejpeg

from pipelines.atomic import atomic_path
from pipelines.declared_length import declared_seconds, shortfall
from pipelines.ffmpeg_log import DecoderLog
from pipelines.ffmpeg_tools import VideoError, crops_by_container, ffmpeg_exe, ffmpeg_version, input_url, probe
from pipelines.frame_count import write_frame_count
from pipelines.frame_store import COMPRESSIONS, FrameWriter, usable_cpus
from pipelines.provenance import sha256_file, sha256_folder, versions
from pipelines.resize import resized

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
PIXEL_FORMATS = {"rgb24": 3, "gray": 1}
# What a frame folder's provenance names for the images each decoded.
DECODERS = {"opencv": f"opencv {cv2.__version__}", "simplejpeg": f"simplejpeg {simplejpeg.__version__} (libjpeg-turbo)"}


@dataclass(frozen=True)
class FrameParams:
    """How frames are stored; part of every frames file's provenance."""

    size: tuple[int, int] | None = None  # (height, width); None keeps the source size
    pixel_format: str = "rgb24"
    compression: str = "lz4"
    block_frames: int = 64  # frames per write; bounds memory

    def __post_init__(self):
        if self.size is not None and (len(self.size) != 2 or any(int(side) < 1 for side in self.size)):
            raise ValueError(f"size {self.size!r}: expected (height, width), both at least 1")
        if self.pixel_format not in PIXEL_FORMATS:
            raise ValueError(f"pixel_format {self.pixel_format!r}: expected one of {sorted(PIXEL_FORMATS)}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression {self.compression!r}: expected one of {COMPRESSIONS}")


def extract(
    source: str | Path, out: str | Path, params: FrameParams, fps: float | None = None, threads: int | None = None
) -> int:
    """Decode ``source`` (a video file or a folder of images) into ``out``; return the frame count.

    ``fps`` is recorded for frame folders (which carry none) and ignored for videos. ``threads``
    decode a frame folder's images in parallel (default: the CPUs this process may use); ffmpeg
    picks its own threads from the same CPU set. The output does not depend on it.
    """
    source = Path(source)
    if source.is_dir():
        return _extract_folder(source, Path(out), params, fps, threads or usable_cpus())
    return _extract_video(source, Path(out), params)


def _start_decoder(source: Path, params: FrameParams):
    """ffmpeg decoding ``source`` to raw frames of its own size on its stdout (``resized`` then
    applies a configured size), describing its input and output on stderr, each line with its level
    (``DecoderLog`` reads it). A container's cropping (Matroska's PixelCrop, MP4's clap), which
    ffmpeg 7.1 and newer apply by default while older releases and ``ffmpeg -i``'s size ignore it,
    is not applied: a file gives the same frames with any ffmpeg. The command does not depend on
    the probe, so decoding starts while ffprobe reads the header."""
    cropping = {"apply_cropping": "codec"} if crops_by_container() else {}
    stream = ffmpeg.input(input_url(source), **cropping)["v:0"]  # the stream probe() describes
    return (
        stream.output("pipe:", format="rawvideo", pix_fmt=params.pixel_format, fps_mode="passthrough")
        .global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info", "-xerror")
        .run_async(cmd=ffmpeg_exe(), pipe_stdout=True, pipe_stderr=True)
    )


DESCRIBE_TIMEOUT_S = 120.0  # ffmpeg states its output before the first frame: seconds for a local file


def _wait_for_output_size(log: DecoderLog, source: Path, timeout: float = DESCRIBE_TIMEOUT_S) -> None:
    """Wait until ffmpeg has stated the size of the frames it writes, or has ended. A description
    this code cannot read would otherwise leave ffmpeg blocked on a full pipe and the job waiting
    for ever: after ``timeout`` seconds the video is refused, naming it (the caller stops ffmpeg)."""
    deadline = time.monotonic() + timeout
    while not log.described.wait(1.0):
        if time.monotonic() > deadline:
            raise VideoError(f"{source}: ffmpeg did not state the size of its output frames within {timeout:g} s "
                             f"(its last messages: {log.summary()}); stopped")


def _extract_video(source: Path, out: Path, params: FrameParams) -> int:
    process = _start_decoder(source, params)
    log = DecoderLog()
    drain = threading.Thread(target=log.read, args=(process.stderr,), daemon=True)
    drain.start()
    free: queue.Queue[bytearray] = queue.Queue()
    reader = None
    try:
        info = probe(source)  # a missing or unreadable file stops here, naming it
        _widen_pipe(process.stdout)
        # ffmpeg states the size of the frames it writes before the first one: its bytes are read as
        # frames only when that is the stream's size (turned by its rotation), never reshaped to another.
        _wait_for_output_size(log, source)
        if log.output_size is None:  # ffmpeg ended before it wrote a frame
            wrote = process.stdout.read(1)
            process.wait()
            drain.join()
            if wrote:
                raise VideoError(f"{source}: ffmpeg wrote frames without stating their size")
            raise VideoError(f"{source}: the video has no frames (ffmpeg: {log.summary(1)})")
        if log.output_size != info.frame_size:
            (out_h, out_w), (stream_h, stream_w) = log.output_size, info.frame_size
            raise VideoError(f"{source}: ffmpeg decodes {out_w}x{out_h} frames but the stream is {stream_w}x{stream_h} "
                             f"(display rotation {info.rotation} degrees); its frames are not stored at another size")
        decoded_height, decoded_width = info.frame_size
        height, width = params.size or info.frame_size
        channels = PIXEL_FORMATS[params.pixel_format]
        frame_bytes = decoded_height * decoded_width * channels
        # A reader thread keeps ffmpeg decoding while this thread compresses. Blocks travel in a ring
        # of reused buffers: memory stays at RING blocks whatever the video's length, and no block's
        # pages are allocated (and zeroed by the kernel) anew.
        block_bytes = frame_bytes * max(1, min(params.block_frames, READ_BYTES // frame_bytes))
        for _ in range(RING):
            free.put(bytearray(block_bytes))
        filled: queue.Queue[tuple[bytearray, int | Exception]] = queue.Queue()
        reader = threading.Thread(target=_read_blocks, args=(process.stdout, free, filled), daemon=True)
        reader.start()
        with atomic_path(out) as tmp:
            with FrameWriter(tmp, height, width, channels, params.compression) as writer:
                while True:
                    buffer, size = filled.get()
                    if isinstance(size, Exception):
                        raise VideoError(f"{source}: reading ffmpeg's output failed: {size}") from size
                    if size % frame_bytes:
                        raise VideoError(f"{source}: ffmpeg stopped inside a frame (truncated output)")
                    if size:
                        decoded = np.frombuffer(buffer, np.uint8, count=size).reshape(-1, decoded_height, decoded_width, channels)
                        writer.append(resized(decoded, params.size))
                    free.put(buffer)
                    if size < block_bytes:
                        break
                returncode = process.wait()
                drain.join()
                if writer.n_frames == 0:
                    raise VideoError(f"{source}: the video has no frames (ffmpeg: {log.summary(1)})")
                if returncode != 0 or log.count:
                    raise VideoError(f"{source}: ffmpeg could not decode the whole video: {log.summary()}")
                declared = declared_seconds(source, log.input_format, log.input_streams, log.declared_duration)
                if warning := shortfall(source, declared, log.decoded_end, writer.n_frames):
                    print(f"WARNING: {warning}", file=sys.stderr)
                lengths = {"declared_duration": declared, "decoded_duration": log.decoded_end}  # seconds, where known
                writer.set_attrs(
                    _provenance(source, "video", sha256_file(source), params, info.fps, info.frame_size)
                    | {"ffmpeg_version": ffmpeg_version(), "codec": info.codec, "rotation": info.rotation,
                       "n_frames": writer.n_frames}
                    | {key: value for key, value in lengths.items() if value is not None}
                )
                return writer.n_frames
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if reader is not None:
            free.put(bytearray())  # an empty buffer stops a reader still waiting for one
            reader.join()


RING = 3  # blocks in flight between the reader thread and the writer
READ_BYTES = 16 << 20  # a block holds at most block_frames frames and at most this many bytes


def _widen_pipe(stream) -> None:
    """Let ffmpeg run up to a megabyte ahead of the reader (a Linux pipe holds 64 KiB by default;
    other platforms keep theirs)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is None:
        return
    try:
        fcntl.fcntl(stream.fileno(), set_size, 1 << 20)
    except OSError:  # above the system's pipe-max-size: keep the default
        pass


def _read_blocks(stream, free: "queue.Queue[bytearray]", filled: "queue.Queue[tuple[bytearray, int | Exception]]") -> None:
    """Fill free buffers from ffmpeg's pipe and pass them on with their byte count; a count
    below the buffer's size marks the end of the stream, an exception in its place a failed read
    (so that the writer never waits for a reader that is gone)."""
    buffer = bytearray()
    try:
        while True:
            buffer = free.get()
            if not buffer:
                return
            view, size = memoryview(buffer), 0
            while size < len(buffer) and (n := stream.readinto(view[size:])):
                size += n
            filled.put((buffer, size))
            if size < len(buffer):
                return
    except Exception as err:  # noqa: BLE001 - handed to the writer, which raises it
        filled.put((buffer, err))


def natural_key(path: Path) -> list:
    """Sort key that orders 2.jpg before 10.jpg."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_images(folder: Path) -> list[Path]:
    """Image files of a frame folder in natural order: the frames of one video, so one image type,
    one naming pattern and consecutive frame numbers. A stray image (``background.png``), two
    files of one frame (``5.jpg`` and ``005.jpg``) or a missing frame would shift every frame
    after it against its label, so each is an error naming the folder and the files."""
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    if not files:
        raise VideoError(f"{folder}: frame folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    suffixes = sorted({p.suffix.lower() for p in files})
    if len(suffixes) > 1:
        raise VideoError(f"{folder}: frame folder mixes image types {', '.join(suffixes)}; one video's frames share one")
    patterns: dict[str, list[str]] = {}
    for p in files:
        patterns.setdefault(re.sub(r"\d+", "#", p.name), []).append(p.name)
    if len(patterns) > 1:
        odd = sorted(patterns.values(), key=len)[0][0]
        raise VideoError(f"{folder}: {odd} is not named like the other frames ({', '.join(sorted(patterns))})")
    numbers = [int(re.findall(r"\d+", p.name)[-1]) for p in files] if "#" in next(iter(patterns)) else []
    for previous, current, path in zip(numbers, numbers[1:], files[1:]):
        if current == previous:
            raise VideoError(f"{folder}: two files of frame {current} ({path.name} and another)")
        if current != previous + 1:
            raise VideoError(f"{folder}: frame {previous + 1} is missing (the files jump from {previous} to {current})")
    return files


def _read_image(path: Path, pixel_format: str) -> tuple[np.ndarray, str]:
    """An image's pixels, and which of DECODERS decoded them."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as err:  # a broken link, a folder named like a frame, no permission
        raise VideoError(f"{path}: cannot read the image ({err.strerror or err})") from None
    if not _image_is_complete(path, data):
        raise VideoError(f"{path}: truncated image (its end marker is missing)")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return _read_jpeg(path, data, pixel_format)
    return _decode_with_opencv(path, data, pixel_format), "opencv"


def _decode_with_opencv(path: Path, data: np.ndarray, pixel_format: str) -> np.ndarray:
    """An image decoded by OpenCV, turned by its EXIF orientation, as (H, W, 1) grey or (H, W, 3) RGB."""
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE if pixel_format == "gray" else cv2.IMREAD_COLOR)
    if image is None:
        raise VideoError(f"{path}: not a readable image")
    return image[..., None] if pixel_format == "gray" else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_jpeg(path: Path, data: np.ndarray, pixel_format: str) -> tuple[np.ndarray, str]:
    """A JPEG decoded by libjpeg-turbo in strict mode: damaged entropy-coded data is an error. OpenCV
    (and Pillow) decode such a file with only libjpeg's unnamed warning on stderr and store wrong
    pixels. The pixels of a sound file are OpenCV's, bit for bit (the same library, the same
    default DCT and upsampling); the decoder releases the GIL, so the pool's threads decode side by
    side. A file with EXIF data, which may turn the picture (camera photos; frames extracted by ffmpeg
    carry none), is decoded again by OpenCV once it has passed, so that it is turned as OpenCV turns it."""
    raw = data.tobytes()
    try:
        image = simplejpeg.decode_jpeg(raw, colorspace="GRAY" if pixel_format == "gray" else "RGB", strict=True)
    except ValueError as err:
        raise VideoError(f"{path}: damaged JPEG ({err})") from None
    if b"Exif\x00\x00" not in raw[:65536]:
        return image, "simplejpeg"
    return _decode_with_opencv(path, data, pixel_format), "opencv"


def _image_is_complete(path: Path, data: np.ndarray) -> bool:
    """Whether a JPEG or PNG ends with its end marker: OpenCV decodes a cut-off JPEG without an
    error, filling the missing rows with grey."""
    tail = data[-64:].tobytes().rstrip(b"\x00")  # some writers pad the file with zeros
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        return tail.endswith(b"\xff\xd9")
    if suffix == ".png":
        return b"IEND" in tail
    return True


def _extract_folder(folder: Path, out: Path, params: FrameParams, fps: float | None, threads: int) -> int:
    files = list_images(folder)
    first, decoder = _read_image(files[0], params.pixel_format)
    used = {decoder}  # the decoders that gave the stored pixels
    original = first.shape[:2]
    height, width = params.size or original
    channels = PIXEL_FORMATS[params.pixel_format]

    def fit(image: np.ndarray, path: Path) -> np.ndarray:
        if image.shape[:2] != original:
            raise VideoError(f"{path}: size {image.shape[:2]} differs from the folder's {original}")
        return resized(image.reshape(1, *original, channels), params.size)[0]

    def load(path: Path) -> np.ndarray:
        image, decoder = _read_image(path, params.pixel_format)
        used.add(decoder)
        return fit(image, path)

    blocks = [files[start : start + params.block_frames] for start in range(0, len(files), params.block_frames)]
    # Both decoders run outside the GIL: the pool decodes the next block while this thread writes
    # the current one, and at most two blocks are in memory whatever the folder's length.
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, atomic_path(out) as tmp:
        with FrameWriter(tmp, height, width, channels, params.compression) as writer:
            pending = [pool.submit(fit, first, files[0])] + [pool.submit(load, path) for path in blocks[0][1:]]
            for index in range(len(blocks)):
                block = [future.result() for future in pending]
                if index + 1 < len(blocks):
                    pending = [pool.submit(load, path) for path in blocks[index + 1]]
                writer.append(np.stack(block))
            writer.set_attrs(
                _provenance(folder, "frame_folder", sha256_folder(folder, files), params, fps or 0.0, original)
                | {"decoder": " + ".join(DECODERS[name] for name in sorted(used)), "n_frames": writer.n_frames}
            )
            return writer.n_frames


def _provenance(source: Path, kind: str, digest: str, params: FrameParams, fps: float, original) -> dict:
    return {
        "source": str(source),
        "source_kind": kind,
        "source_sha256": digest,
        "params": asdict(params),
        "fps": float(fps),
        "original_size": list(original),
        "versions": versions(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="video file or folder of frame images")
    parser.add_argument("out", type=Path, help="frames HDF5 file to write")
    parser.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="resize to this size")
    parser.add_argument("--pixel-format", default="rgb24", choices=sorted(PIXEL_FORMATS))
    parser.add_argument("--compression", default="lz4", choices=COMPRESSIONS)
    parser.add_argument("--fps", type=float, help="frame rate to record for a frame folder")
    parser.add_argument("--threads", type=int, help="threads decoding a frame folder (default: all CPUs allowed)")
    parser.add_argument("--count-out", type=Path,
                        help="also write the frame count here (JSON): what the labels job reads, so that it needs "
                             "no frames file that was deleted once the features were made")
    args = parser.parse_args(argv)
    params = FrameParams(tuple(args.size) if args.size else None, args.pixel_format, args.compression)
    try:
        n = extract(args.source, args.out, params, args.fps, args.threads)
    except VideoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.count_out:
        write_frame_count(args.count_out, args.out, n)
    print(f"{args.out}: {n} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
