"""Frames via ffmpeg into HDF5: counts, provenance, chunking, atomic writes, clear errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipelines.ffmpeg_tools import VideoError, ffmpeg_exe, probe
from pipelines.frame_clips import FrameFormat, sliding_clips
from pipelines.frame_store import FRAMES, FrameReader
from pipelines.frames import FrameParams, extract, list_images, natural_key
from tests.conftest import encode_video, moving_square_frames


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_video_round_trip_keeps_count_size_and_content(tmp_path):
    frames = moving_square_frames(37)
    video = encode_video(tmp_path / "clip.mp4", frames)
    n = extract(video, tmp_path / "clip.h5", FrameParams())
    assert n == 37
    with FrameReader(tmp_path / "clip.h5") as reader:
        assert reader.shape == (37, 48, 64, 3)
        decoded = reader.clip(0, 37).astype(int)
        attrs = reader.attrs
    # Lossy codec at high quality: the square is where it was drawn.
    assert np.abs(decoded - frames.astype(int)).mean() < 4
    assert attrs["n_frames"] == 37 and attrs["original_size"] == [48, 64]
    assert len(attrs["source_sha256"]) == 64 and attrs["ffmpeg_version"].startswith("ffmpeg version")
    assert attrs["params"]["compression"] == "lz4" and attrs["fps"] == pytest.approx(25)


def test_frames_are_chunked_one_frame_per_chunk_and_compressed(tmp_path):
    video = encode_video(tmp_path / "clip.mp4", moving_square_frames(20))
    extract(video, tmp_path / "clip.h5", FrameParams(compression="lz4"))
    with h5py.File(tmp_path / "clip.h5") as handle:
        data = handle[FRAMES]
        assert data.chunks == (1, 48, 64, 3)
        assert data.id.get_create_plist().get_nfilters() == 1


@pytest.mark.parametrize("content, problem", [
    (lambda h: h.create_dataset("frames", data=np.arange(5)), r"'frames' is int64 of shape \(5,\)"),  # a poses file's
    (lambda h: h.create_group("frames"), "'frames' is a Group, not a dataset"),
    (lambda h: h.create_dataset("frames", data=np.zeros((4, 8, 8), np.uint8)), r"'frames' is uint8 of shape \(4, 8, 8\); expected uint8"),
    (lambda h: h.create_dataset("frames", data=np.zeros((4, 8, 8, 3), np.float32)), "'frames' is float32"),
    (lambda h: h.create_dataset("frames", shape=(0, 8, 8, 3), dtype=np.uint8), "it holds no frames"),
    (lambda h: h.create_dataset("images", data=np.zeros((4, 8, 8, 3), np.uint8)), "no 'frames' dataset"),
])
def test_a_file_that_is_not_frames_is_refused_by_name(tmp_path, content, problem):
    """A poses file's int64 `frames` was read as a video of that many frames; a float one was scored."""
    path = tmp_path / "video.h5"
    with h5py.File(path, "w") as handle:
        content(handle)
    with pytest.raises(ValueError, match=rf"{path}: not a frames file: {problem}"):
        FrameReader(path)


def test_a_damaged_chunk_is_named_with_its_frames(tmp_path):
    video = encode_video(tmp_path / "clip.mp4", moving_square_frames(20))
    extract(video, tmp_path / "clip.h5", FrameParams(compression="lz4"))
    with h5py.File(tmp_path / "clip.h5") as handle:
        offset = handle[FRAMES].id.get_chunk_info_by_coord((7, 0, 0, 0)).byte_offset
    with open(tmp_path / "clip.h5", "r+b") as handle:  # the chunk's Blosc header
        handle.seek(offset)
        handle.write(b"\xff" * 16)
    with FrameReader(tmp_path / "clip.h5") as reader:
        assert reader.clip(0, 7).shape == (7, 48, 64, 3)
        with pytest.raises(ValueError, match=r"clip.h5: frames 5\.\.8 cannot be read .*delete it and rerun its frames job"):
            reader.clip(5, 4)
        with pytest.raises(ValueError, match=r"clip.h5: frames 0\.\.19 cannot be read"):
            list(reader.blocks(64))


def test_resize_and_gray(tmp_path):
    video = encode_video(tmp_path / "clip.mp4", moving_square_frames(10))
    extract(video, tmp_path / "small.h5", FrameParams(size=(24, 32), pixel_format="gray"))
    with FrameReader(tmp_path / "small.h5") as reader:
        assert reader.shape == (10, 24, 32, 1)


@pytest.mark.parametrize("block_frames", [5, 7])
def test_block_streaming_matches_single_block(tmp_path, block_frames):
    """Many blocks through the reader's ring of reused buffers (50 frames: 10 full blocks of 5, or
    7 blocks of 7 and a last one of 1) give the frames of a single block."""
    video = encode_video(tmp_path / "clip.mp4", moving_square_frames(50))
    assert extract(video, tmp_path / "a.h5", FrameParams(block_frames=block_frames)) == 50
    extract(video, tmp_path / "b.h5", FrameParams(block_frames=64))
    with FrameReader(tmp_path / "a.h5") as a, FrameReader(tmp_path / "b.h5") as b:
        assert np.array_equal(a.clip(0, 50), b.clip(0, 50))


def test_truncated_video_is_an_error_and_leaves_nothing(tmp_path):
    video = encode_video(tmp_path / "clip.mkv", moving_square_frames(60))
    data = video.read_bytes()
    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="truncated.mkv"):
        extract(truncated, tmp_path / "out.h5", FrameParams())
    assert not (tmp_path / "out.h5").exists()
    assert _leftovers(tmp_path) == []


def test_truncated_mp4_is_an_error(tmp_path):
    video = encode_video(tmp_path / "clip.mp4", moving_square_frames(60))
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(video.read_bytes()[:2000])
    with pytest.raises(VideoError, match="cut.mp4"):
        extract(truncated, tmp_path / "out.h5", FrameParams())
    assert not (tmp_path / "out.h5").exists()


def test_zero_frame_video_is_an_error(tmp_path):
    empty = tmp_path / "empty.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "color=c=black:s=64x48:r=25",
         "-frames:v", "0", "-c:v", "libx264", str(empty)], check=True,
    )
    with pytest.raises(VideoError, match="empty.mp4"):
        extract(empty, tmp_path / "out.h5", FrameParams())
    assert not (tmp_path / "out.h5").exists()
    assert _leftovers(tmp_path) == []


def test_missing_and_non_video_files_are_errors(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        extract(tmp_path / "nope.mp4", tmp_path / "out.h5", FrameParams())
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(VideoError, match="notes.mp4"):
        probe(tmp_path / "notes.mp4")


def test_frame_folder_in_natural_order(tmp_path):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(1, 11):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((8, 8, 3), i * 20, np.uint8))
    assert [p.name for p in list_images(folder)] == [f"{i}.png" for i in range(1, 11)]
    assert sorted(["10.png", "9.png"], key=lambda n: natural_key(folder / n)) == ["9.png", "10.png"]
    extract(folder, tmp_path / "f.h5", FrameParams(), fps=10)
    with FrameReader(tmp_path / "f.h5") as reader:
        assert reader.clip(0, 10)[:, 0, 0, 0].tolist() == [i * 20 for i in range(1, 11)]
        assert reader.attrs["source_kind"] == "frame_folder" and reader.attrs["fps"] == 10


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("background.png", r"background.png is not named like the other frames"),
        ("003.jpg", r"mixes image types .jpg, .png"),
        ("03.png", r"two files of frame 3"),
        ("007.png", r"frame 5 is missing \(the files jump from 4 to 7\)"),
    ],
)
def test_a_frame_folder_with_a_stray_duplicate_or_missing_frame_is_refused(tmp_path, extra, message):
    """Any of these would shift every later frame against its label."""
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.zeros((8, 8, 3), np.uint8))
    list_images(folder)
    cv2.imwrite(str(folder / extra), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(VideoError, match=message):
        extract(folder, tmp_path / "f.h5", FrameParams())
    assert not (tmp_path / "f.h5").exists()


def test_a_truncated_jpeg_is_refused_by_name(tmp_path):
    """OpenCV decodes a cut-off JPEG without an error (grey rows where data is missing)."""
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cut = (folder / "001.jpg").read_bytes()
    (folder / "001.jpg").write_bytes(cut[: len(cut) // 2])
    assert cv2.imread(str(folder / "001.jpg")) is not None  # what the check is for
    with pytest.raises(VideoError, match=r"001.jpg: truncated image"):
        extract(folder, tmp_path / "f.h5", FrameParams())
    assert not (tmp_path / "f.h5").exists()


@pytest.mark.parametrize("pixel_format", ["rgb24", "gray"])
def test_a_jpeg_damaged_inside_is_refused_and_sound_ones_match_opencv(shared_data, tmp_path, pixel_format):
    """4 KiB zeroed in the middle of a Ped2 frame, its end marker intact: OpenCV decodes it with a
    warning on stderr and wrong pixels (34.7 grey levels off on average), and the store kept them."""
    import shutil

    import cv2

    folder = tmp_path / "frames"
    source = sorted((shared_data / "ped2" / "testing" / "frames" / "01").glob("*.jpg"))[:6]
    folder.mkdir()
    for path in source:
        shutil.copy(path, folder / path.name)
    params = FrameParams(pixel_format=pixel_format)
    assert extract(folder, tmp_path / "sound.h5", params) == 6
    with FrameReader(tmp_path / "sound.h5") as reader:
        stored = reader.clip(0, 6)
    for index, path in enumerate(source):  # the same pixels as OpenCV's decode of a sound file
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if pixel_format == "gray" else cv2.IMREAD_COLOR)
        expected = image[..., None] if pixel_format == "gray" else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        assert np.array_equal(stored[index], expected), path.name
    victim = folder / source[4].name
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)
    victim.write_bytes(bytes(data))
    assert cv2.imread(str(victim)) is not None  # what the check is for
    with pytest.raises(VideoError, match=rf"{victim.name}: damaged JPEG \(Corrupt JPEG data"):
        extract(folder, tmp_path / "damaged.h5", params)
    assert not (tmp_path / "damaged.h5").exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_jpeg_frame_is_turned_by_its_exif_orientation_as_opencv_turns_it(tmp_path, orientation):
    import io

    import cv2
    from PIL import Image

    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[:10, :20] = 255
    pixels[30:, 50:] = (0, 128, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(pixels).save(folder / "001.jpg", "JPEG", quality=95, exif=exif.tobytes())
    assert extract(folder, tmp_path / "f.h5", FrameParams()) == 1
    with FrameReader(tmp_path / "f.h5") as reader:
        stored = reader.clip(0, 1)[0]
    expected = cv2.cvtColor(cv2.imread(str(folder / "001.jpg"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert stored.shape == expected.shape and np.array_equal(stored, expected)


def test_a_rotated_video_is_stored_upright_and_only_its_first_video_stream(tmp_path):
    """ffmpeg turns frames by the stream's display matrix: the store takes their turned size (a
    64x48 stream marked 90 degrees gives 48 x 64 frames, not 64x48 bytes read as the wrong shape),
    and a second video stream in the file is not decoded."""
    plain = encode_video(tmp_path / "plain.mp4", np.random.default_rng(1).integers(0, 255, (6, 48, 64, 3), dtype=np.uint8))
    turned = tmp_path / "turned.mp4"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-display_rotation", "90", "-i", str(plain), "-c", "copy",
                    str(turned)], check=True)
    info = probe(turned)
    assert (info.rotation, info.frame_size) == (90, (64, 48))
    n = extract(turned, tmp_path / "t.h5", FrameParams())
    upright = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(turned), "-f", "rawvideo",
                              "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    with FrameReader(tmp_path / "t.h5") as reader:
        frames = reader.clip(0, n)
        assert frames.shape == (6, 64, 48, 3) and frames.tobytes() == upright
        assert list(reader.attrs["original_size"]) == [64, 48] and reader.attrs["rotation"] == 90
    small = encode_video(tmp_path / "small.mp4", np.zeros((6, 24, 32, 3), np.uint8))
    both = tmp_path / "both.mkv"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(small), "-i", str(plain), "-map", "0:v", "-map", "1:v",
                    "-c", "copy", str(both)], check=True)
    assert extract(both, tmp_path / "b.h5", FrameParams()) == 6
    with FrameReader(tmp_path / "b.h5") as reader:
        assert reader.clip(0, 6).shape == (6, 24, 32, 3)


def test_corrupt_image_in_folder_names_the_file(tmp_path):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "000.png"), np.zeros((8, 8, 3), np.uint8))
    (folder / "001.png").write_bytes(b"garbage")
    with pytest.raises(VideoError, match="001.png"):
        extract(folder, tmp_path / "f.h5", FrameParams())
    assert not (tmp_path / "f.h5").exists()


@pytest.mark.parametrize("threads", [1, 3])
def test_folder_decoded_in_parallel_keeps_order_and_content(tmp_path, threads):
    """Blocks of 4 images, decoded by a pool: the frames come out in file order, identical to a
    single-threaded decode, and a wrongly sized image in a later block names the file."""
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(11):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((6, 10, 3), (i * 23, 255 - i * 23, i), np.uint8))
    params = FrameParams(block_frames=4)
    assert extract(folder, tmp_path / "f.h5", params, threads=threads) == 11
    with FrameReader(tmp_path / "f.h5") as reader:
        frames = reader.clip(0, 11)
    assert frames[:, 0, 0].tolist() == [[i, 255 - i * 23, i * 23] for i in range(11)]  # written BGR, stored RGB
    cv2.imwrite(str(folder / "009.png"), np.zeros((6, 12, 3), np.uint8))
    with pytest.raises(VideoError, match="009.png"):
        extract(folder, tmp_path / "g.h5", params, threads=threads)
    assert not (tmp_path / "g.h5").exists() and _leftovers(tmp_path) == []


def test_real_ped2_folder_and_vtest_video(shared_data, tmp_path):
    assert extract(shared_data / "ped2" / "testing" / "frames" / "01", tmp_path / "p.h5", FrameParams()) == 180
    n = extract(shared_data / "videos" / "vtest.avi", tmp_path / "v.h5", FrameParams(size=(144, 192)))
    assert n == 795


def test_grey_storage_of_ped2_is_lossless_for_the_methods(shared_data, tmp_path):
    """configs/ped2.yaml stores Ped2 as one grey channel: its JPEGs carry three equal channels, so
    the grey store holds the same pixels, and the clips LGN-Net (BGR, [-1, 1]) and STD (RGB,
    [0, 1]) read from it equal those read from a colour store."""
    folder = shared_data / "ped2" / "testing" / "frames" / "01"
    colour, grey = tmp_path / "rgb.h5", tmp_path / "gray.h5"
    assert extract(folder, colour, FrameParams(pixel_format="rgb24")) == 180
    assert extract(folder, grey, FrameParams(pixel_format="gray")) == 180
    with FrameReader(colour) as c, FrameReader(grey) as g:
        rgb, one = c.clip(0, 180), g.clip(0, 180)
    assert one.shape == (180, 240, 360, 1) and rgb.shape == (180, 240, 360, 3)
    assert (rgb == one).all()  # broadcast: every channel equals the grey one
    assert grey.stat().st_size < 0.6 * colour.stat().st_size  # lz4 already shrinks the repeated channels
    for fmt in (FrameFormat(64, "bgr", -1.0, 1.0), FrameFormat(64, "rgb", 0.0, 1.0)):
        from_colour = list(sliding_clips(colour, 5, fmt, batch=32))
        from_grey = list(sliding_clips(grey, 5, fmt, batch=32))
        assert len(from_colour) == len(from_grey) == 6  # 176 clips in batches of 32
        for (start_c, clips_c), (start_g, clips_g) in zip(from_colour, from_grey):
            assert start_c == start_g and clips_c.shape[2] == 3 and torch.equal(clips_c, clips_g)


def test_reader_hands_a_failed_read_to_the_writer():
    """A read error in the reader thread reaches the writer as the block's count, so the writer
    raises instead of waiting for a block that never comes; a clean stream ends with a short block."""
    import io
    import queue

    from pipelines.frames import _read_blocks

    class FailingPipe(io.RawIOBase):
        def readinto(self, buffer):
            raise OSError("pipe broke")

    free, filled = queue.Queue(), queue.Queue()
    free.put(bytearray(8))
    _read_blocks(FailingPipe(), free, filled)
    buffer, outcome = filled.get_nowait()
    assert isinstance(outcome, OSError) and len(buffer) == 8

    for _ in range(2):
        free.put(bytearray(8))
    _read_blocks(io.BufferedReader(io.BytesIO(bytes(range(12)))), free, filled)
    (first, n1), (second, n2) = filled.get_nowait(), filled.get_nowait()
    assert (n1, n2) == (8, 4) and bytes(first) == bytes(range(8)) and bytes(second[:4]) == bytes(range(8, 12))


def test_a_video_with_repeated_timestamps_is_stored_whole(tmp_path):
    """The raw output muxer complains about repeated timestamps while it writes every frame: that is no
    decoding error (before, the whole video was refused)."""
    video = tmp_path / "repeated.mkv"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v", "10",
                    "-vf", "setpts=floor(N/2)/(10*TB)", "-fps_mode", "passthrough", "-c:v", "ffv1", str(video)], check=True)
    assert extract(video, tmp_path / "r.h5", FrameParams()) == 10
    plain = subprocess.run([ffmpeg_exe(), "-loglevel", "quiet", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24",
                            "-fps_mode", "passthrough", "-"], capture_output=True, check=True).stdout
    with FrameReader(tmp_path / "r.h5") as reader:
        assert reader.clip(0, 10).tobytes() == plain


@pytest.mark.parametrize(("version_line", "used"), [
    ("ffmpeg version 4.4.2-0ubuntu0.22.04.1 Copyright (c) 2000-2021 the FFmpeg developers", "bundled"),
    ("ffmpeg version 6.1.1-3ubuntu5 Copyright (c) 2000-2023 the FFmpeg developers", "system"),
    ("ffmpeg version N-112233-g0123456789 Copyright (c) 2000-2024 the FFmpeg developers", "system"),
])
def test_an_ffmpeg_on_path_older_than_the_decoders_options_gives_way_to_the_bundled_one(tmp_path, monkeypatch, version_line, used):
    """ffmpeg 4.x (Ubuntu 22.04, many cluster modules) has no -fps_mode: every video failed, reported
    as having no frames."""
    import imageio_ffmpeg

    fake = tmp_path / "ffmpeg"
    fake.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    ffmpeg_exe.cache_clear()
    try:
        chosen = ffmpeg_exe()
    finally:
        ffmpeg_exe.cache_clear()
    assert chosen == (imageio_ffmpeg.get_ffmpeg_exe() if used == "bundled" else str(fake))


@pytest.mark.parametrize("size", [(24, 32), (60, 80)])
def test_a_video_and_a_frame_folder_of_the_same_pixels_give_the_same_frames_at_any_size(tmp_path, size):
    """ffmpeg's scaler resized videos, OpenCV's bilinear frame folders (aliasing when shrinking): with
    frames.size set, ShanghaiTech's training videos and test folders were resized differently."""
    import cv2

    frames = moving_square_frames(6)
    folder = tmp_path / "folder"
    folder.mkdir()
    for index, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{index:03d}.png"), frame[..., ::-1])
    video = tmp_path / "lossless.mkv"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48",
                    "-i", "pipe:", "-c:v", "ffv1", "-pix_fmt", "bgr0", str(video)], input=frames.tobytes(), check=True)
    params = FrameParams(size=size)
    extract(folder, tmp_path / "folder.h5", params, fps=25.0)
    extract(video, tmp_path / "video.h5", params)
    with FrameReader(tmp_path / "folder.h5") as a, FrameReader(tmp_path / "video.h5") as b:
        from_folder, from_video = a.clip(0, 6), b.clip(0, 6)
    assert from_folder.shape == (6, *size, 3)
    np.testing.assert_array_equal(from_video, from_folder)


@pytest.mark.parametrize("damage", ["broken link", "folder"])
def test_an_image_that_cannot_be_read_is_named_not_a_traceback(tmp_path, damage):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(moving_square_frames(3)):
        cv2.imwrite(str(folder / f"{index:03d}.png"), frame)
    (folder / "001.png").unlink()
    if damage == "broken link":
        (folder / "001.png").symlink_to(tmp_path / "gone.png")
    else:
        (folder / "001.png").mkdir()
    with pytest.raises(VideoError, match=r"001\.png: cannot read the image \((No such file or directory|Is a directory)\)"):
        extract(folder, tmp_path / "out.h5", FrameParams(), fps=25.0)
    assert not (tmp_path / "out.h5").exists()


def test_the_frames_job_writes_the_count_the_labels_job_reads(tmp_path):
    from pipelines.frames import main
    from pipelines.labels import frame_counts

    video = encode_video(tmp_path / "v.mp4", moving_square_frames(7))
    out, count = tmp_path / "out" / "v.h5", tmp_path / "out" / "v.n_frames.json"
    out.parent.mkdir()
    assert main([str(video), str(out), "--count-out", str(count)]) == 0
    assert frame_counts([count]) == frame_counts([out]) == {"v": 7}
    count.write_text('{"n_frames": 0}')
    with pytest.raises(VideoError, match=rf"{count}: frame count 0 is not a positive integer"):
        frame_counts([count])


def _repeated_timestamps_video(path, n_frames):
    """A tiny lossless video whose frames share timestamps in pairs: ffmpeg's raw output muxer
    prints a notice for every second frame it writes."""
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=16x16:rate=10",
                    "-frames:v", str(n_frames), "-vf", "setpts=floor(N/2)/(10*TB)", "-fps_mode", "passthrough",
                    "-c:v", "ffv1", str(path)], check=True)
    return path


def test_ffmpegs_messages_do_not_grow_memory_with_the_videos_length(tmp_path):
    """A notice for every second frame on ffmpeg's stderr (about 100 bytes each) was all kept until
    ffmpeg ended: the Python heap's peak grew by 2.1 MB from 4,000 frames to 16,000. Both videos are
    over a megabyte, so the source's hashing (1 MiB at a time) peaks alike."""
    import tracemalloc

    videos = {n: _repeated_timestamps_video(tmp_path / f"r{n}.mkv", n) for n in (4000, 16000)}
    extract(videos[4000], tmp_path / "warm.h5", FrameParams(pixel_format="gray"))  # one-time allocations
    peaks = {}
    for n, video in videos.items():
        tracemalloc.start()
        try:
            assert extract(video, tmp_path / f"r{n}.h5", FrameParams(pixel_format="gray")) == n
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peaks[16000] - peaks[4000] < 200_000, peaks


def _mkv_cropped_at_the_bottom(path, frames, rows):
    """A lossless mkv of ``frames`` whose track asks for ``rows`` rows to be cropped off the bottom
    (Matroska's PixelCropBottom). ffmpeg's muxer writes no cropping of its own: the DisplayHeight
    element it writes for a 2:1 pixel aspect becomes PixelCropBottom, an element of the same size."""
    _, height, width, _ = frames.shape
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                    "-i", "pipe:", "-vf", "setsar=2", "-c:v", "ffv1", "-pix_fmt", "bgr0", str(path)],
                    input=frames.tobytes(), check=True)
    data = path.read_bytes()
    display_height = bytes([0x54, 0xBA, 0x81])  # the element's ID, then its size: one byte
    assert data.count(display_height) == 1, "ffmpeg's muxer no longer writes DisplayHeight as expected"
    at = data.index(display_height)
    path.write_bytes(data[:at] + bytes([0x54, 0xAA, 0x81, rows]) + data[at + 4 :])
    return path


def test_a_video_cropped_by_its_container_gives_its_whole_frames_with_any_ffmpeg(tmp_path):
    """ffmpeg 7.1 and newer apply a container's cropping by default, while `ffmpeg -i` prints the
    uncropped size: the store read 30 frames of 64x32 as 20 scrambled frames of 64x48. Older
    releases ignore the cropping, so the frames are decoded whole with every ffmpeg."""
    from pipelines.ffmpeg_tools import ffmpeg_version, release_of

    frames = moving_square_frames(30)
    video = _mkv_cropped_at_the_bottom(tmp_path / "cropped.mkv", frames, 16)
    if (release_of(ffmpeg_version()) or (99, 0)) >= (7, 1):  # the file is what the test needs: ffmpeg crops it
        cropped = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(video), "-f", "rawvideo",
                                  "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
        assert len(cropped) == 30 * 32 * 64 * 3
    assert probe(video).frame_size == (48, 64)
    assert extract(video, tmp_path / "c.h5", FrameParams()) == 30
    with FrameReader(tmp_path / "c.h5") as reader:
        assert reader.shape == (30, 48, 64, 3) and np.array_equal(reader.clip(0, 30), frames)
        assert reader.attrs["original_size"] == [48, 64]


@pytest.mark.parametrize(("degrees", "size"), [(60, (48, 64)), (89.4, (48, 64)), (90.4, (64, 48))])
def test_a_rotation_other_than_a_quarter_turn_keeps_the_coded_size(tmp_path, degrees, size):
    """ffmpeg transposes the frames only for a rotation of 90 or 270 whole degrees; any other angle
    turns the picture within the coded 64x48. Rounding to the nearest quarter turn took 60 degrees
    for 90 and stored 64x48 bytes as 48x64 frames."""
    plain = encode_video(tmp_path / "plain.mp4", moving_square_frames(6))
    turned = tmp_path / "turned.mp4"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-display_rotation", str(degrees), "-i", str(plain),
                    "-c", "copy", str(turned)], check=True)
    assert probe(turned).frame_size == size
    assert extract(turned, tmp_path / "t.h5", FrameParams()) == 6
    decoded = subprocess.run([ffmpeg_exe(), "-loglevel", "quiet", "-i", str(turned), "-f", "rawvideo",
                              "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    with FrameReader(tmp_path / "t.h5") as reader:
        assert reader.shape == (6, *size, 3) and reader.clip(0, 6).tobytes() == decoded
        assert reader.attrs["original_size"] == list(size)


def test_frames_of_another_size_than_the_streams_are_refused_naming_both(tmp_path):
    """`ffmpeg -i` prints a rotation to hundredths: 89.499 degrees reads 89.50, a quarter turn, while
    ffmpeg itself rounds 89.499 to 89 and keeps the coded 64x48; the bytes of its frames were read as
    frames of 48x64."""
    plain = encode_video(tmp_path / "plain.mp4", moving_square_frames(6))
    turned = tmp_path / "turned.mp4"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-display_rotation", "89.499", "-i", str(plain),
                    "-c", "copy", str(turned)], check=True)
    assert probe(turned).frame_size == (64, 48)
    with pytest.raises(VideoError, match=rf"{turned}: ffmpeg decodes 64x48 frames but the stream is 48x64"):
        extract(turned, tmp_path / "t.h5", FrameParams())
    assert not (tmp_path / "t.h5").exists() and _leftovers(tmp_path) == []


def _cut_avi_after(path, n_chunks):
    """Cut an AVI right after its first ``n_chunks`` frame chunks, as an interrupted copy may."""
    data = path.read_bytes()
    at = data.index(b"movi") + 4  # the frames list's first chunk
    for _ in range(n_chunks):
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        at += 8 + size + (size & 1)
    path.write_bytes(data[:at])


def test_an_avi_cut_between_frames_is_stored_with_a_warning_naming_both_lengths(tmp_path, capfd):
    """ffmpeg decodes an AVI cut at a chunk boundary without an error, and scales the length its
    header declares down by the share of the file that is missing: 40 frames of 100 were stored in
    silence."""
    video = tmp_path / "cut.avi"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25",
                    "-frames:v", "100", "-c:v", "mpeg4", str(video)], check=True)
    assert extract(video, tmp_path / "whole.h5", FrameParams()) == 100
    assert "WARNING" not in capfd.readouterr().err
    _cut_avi_after(video, 40)
    assert extract(video, tmp_path / "cut.h5", FrameParams()) == 40
    assert (f"WARNING: {video}: the file declares 4.00 s of video, and ffmpeg decoded 40 frames ending at 1.60 s "
            "without an error") in capfd.readouterr().err
    with FrameReader(tmp_path / "whole.h5") as whole, FrameReader(tmp_path / "cut.h5") as cut:
        assert (whole.attrs["declared_duration"], whole.attrs["decoded_duration"]) == (4.0, 4.0)
        assert (cut.attrs["declared_duration"], cut.attrs["decoded_duration"]) == (4.0, 1.6)


def test_a_whole_video_of_variable_frame_rate_gives_no_warning(tmp_path, capfd):
    """10 frames at irregular times, the last at 8.1 s: the AVI muxer fills the gaps with empty
    chunks, which its header counts (82 frames declared, 10 decoded), so lengths are compared in time."""
    video = tmp_path / "vfr.avi"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
                    "-frames:v", "10", "-vf", "setpts=N*N/(10*TB)", "-fps_mode", "passthrough", "-c:v", "mpeg4",
                    str(video)], check=True)
    assert extract(video, tmp_path / "vfr.h5", FrameParams()) == 10
    assert "WARNING" not in capfd.readouterr().err
    with FrameReader(tmp_path / "vfr.h5") as reader:
        assert reader.attrs["declared_duration"] == pytest.approx(8.2)
        assert reader.attrs["decoded_duration"] == pytest.approx(8.2)


def test_a_frame_folder_records_the_decoders_that_decoded_its_images(tmp_path):
    """Every frame folder recorded OpenCV, while libjpeg-turbo (simplejpeg) decodes JPEGs and OpenCV
    only those with EXIF data and other image types."""
    import cv2
    import simplejpeg
    from PIL import Image

    jpeg, opencv = f"simplejpeg {simplejpeg.__version__} (libjpeg-turbo)", f"opencv {cv2.__version__}"
    pixels = moving_square_frames(3)
    folders = {name: tmp_path / name for name in ("jpeg", "png", "mixed")}
    for folder in folders.values():
        folder.mkdir()
    for index, frame in enumerate(pixels):
        Image.fromarray(frame).save(folders["jpeg"] / f"{index:03d}.jpg", "JPEG", quality=95)
        Image.fromarray(frame).save(folders["png"] / f"{index:03d}.png")
        exif = Image.Exif()
        exif[0x0112] = 1  # upright
        Image.fromarray(frame).save(folders["mixed"] / f"{index:03d}.jpg", "JPEG", quality=95,
                                    **({"exif": exif.tobytes()} if index == 1 else {}))
    for name, expected in (("jpeg", jpeg), ("png", opencv), ("mixed", f"{opencv} + {jpeg}")):
        assert extract(folders[name], tmp_path / f"{name}.h5", FrameParams(), fps=25.0) == 3
        with FrameReader(tmp_path / f"{name}.h5") as reader:
            assert reader.attrs["decoder"] == expected, name


def test_a_file_without_a_video_stream_is_named_as_such(tmp_path):
    """ffmpeg opens an audio file and, asked for no output, ends with its usage line, which the error
    quoted as its reason: "no readable video stream (At least one output file must be specified)"."""
    audio = tmp_path / "speech.m4a"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac",
                    str(audio)], check=True)
    for attempt in (lambda: probe(audio), lambda: extract(audio, tmp_path / "out.h5", FrameParams())):
        with pytest.raises(VideoError) as raised:
            attempt()
        assert str(raised.value) == f"{audio}: the file holds no video stream"
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or os.cpu_count() < 2, reason="needs CPU affinity and 2 CPUs")
def test_frame_compression_threads_follow_the_cpus_the_job_may_use(tmp_path):
    """Blosc starts a thread per core of the node; a job given one CPU (Slurm, taskset) must use one."""
    script = (
        "import os, sys, blosc, numpy as np\n"
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "from pipelines.frame_store import FrameWriter\n"
        f"with FrameWriter(r'{tmp_path / 'f.h5'}', 8, 8, 3, 'lz4') as writer:\n"
        "    writer.append(np.zeros((2, 8, 8, 3), np.uint8))\n"
        "print(blosc.set_nthreads(1))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.strip() == "1", done.stdout + done.stderr


def test_the_output_size_is_read_from_a_stream_line_a_decoder_message_cut():
    """ffmpeg prints the output's stream line in pieces, and its decoding thread may print between
    them: the size must still be read (else the job would wait for ever on ffmpeg's full pipe)."""
    from pipelines.ffmpeg_log import DecoderLog

    log = DecoderLog()
    for line in ("[info] Output #0, rawvideo, to 'pipe:':\n",
                 "[info]   Stream #0:0[mpeg4 @ 0x55d1] [warning] ac-tex damaged at 3 4\n",  # as readline gives it
                 ": Video: rawvideo (RGB[24] / 0x18424752), rgb24(pc, progressive), 64x48, q=2-31, 30 fps, 30 tbn\n"):
        log.add(line)
    assert log.output_size == (48, 64) and log.described.is_set()


def test_a_decoder_that_never_states_its_output_size_is_refused_in_time(tmp_path):
    from pipelines.ffmpeg_log import DecoderLog
    from pipelines.frames import _wait_for_output_size

    with pytest.raises(VideoError, match=r"v\.avi: ffmpeg did not state the size of its output frames within 1\.5 s"):
        _wait_for_output_size(DecoderLog(), tmp_path / "v.avi", timeout=1.5)
