"""HDF5 storage of decoded video frames, one file per video.

Layout: dataset ``frames`` of shape (N, H, W, C), uint8, chunked one frame per chunk so
that a clip of consecutive frames reads exactly the frames it needs, compressed with a
fast Blosc codec (the choice and its measured cost are in ``bench/frames_bench.py``).
Attributes hold the provenance: source path and sha256, ffmpeg version, extraction
parameters, fps and original size.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import blosc
import h5py
import hdf5plugin
import numpy as np

from pipelines import h5attrs

FRAMES = "frames"

COMPRESSIONS = ("lz4", "lz4hc", "zstd", "gzip", "none")


_BLOSC_LEVELS = {"lz4": 5, "lz4hc": 5, "zstd": 1}


def compression_options(name: str) -> dict[str, Any]:
    """h5py ``create_dataset`` keyword arguments for a named compression."""
    blosc = hdf5plugin.Blosc
    if name in _BLOSC_LEVELS:
        return dict(blosc(cname=name, clevel=_BLOSC_LEVELS[name], shuffle=blosc.NOSHUFFLE))
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 1}
    if name == "none":
        return {}
    raise ValueError(f"unknown frame compression {name!r}; expected one of {COMPRESSIONS}")


def usable_cpus() -> int:
    """The CPUs this process may run on (a Slurm job's allocation, a taskset), not the node's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


class FrameWriter:
    """Append frames to a new HDF5 file, growing the dataset as blocks arrive.

    Blosc codecs compress each frame with python-blosc (Blosc's own threads; the GIL stays held,
    which measured faster than python-blosc's GIL-releasing mode for 1 MB frames) and
    write the chunk directly: the bytes are exactly what the HDF5 Blosc filter reads back, at a
    fraction of the cost of compressing inside the HDF5 filter pipeline. Uncompressed frames are
    written directly too (a chunk is then the frame's raw bytes), skipping h5py's selection path.
    """

    def __init__(self, path: Path, height: int, width: int, channels: int, compression: str):
        self._direct = compression in _BLOSC_LEVELS or compression == "none"
        self._compression = compression
        # Blosc starts as many threads as the node has cores: a one-CPU job on a 64-core node would
        # run 64 on its one CPU.
        blosc.set_nthreads(usable_cpus())
        self._file = h5py.File(path, "w")
        self._frames = self._file.create_dataset(
            FRAMES,
            shape=(0, height, width, channels),
            maxshape=(None, height, width, channels),
            dtype=np.uint8,
            chunks=(1, height, width, channels),
            **compression_options(compression),
        )
        self.n_frames = 0

    def append(self, block: np.ndarray) -> None:
        n = block.shape[0]
        self._frames.resize(self.n_frames + n, axis=0)
        if self._direct:
            block = np.ascontiguousarray(block)
            for i, frame in enumerate(block):
                self._frames.id.write_direct_chunk((self.n_frames + i, 0, 0, 0), self._chunk(frame))
        else:
            self._frames[self.n_frames : self.n_frames + n] = block
        self.n_frames += n

    def _chunk(self, frame: np.ndarray):
        """The stored bytes of one frame's chunk."""
        if self._compression == "none":
            return frame.data
        return blosc.compress(
            frame.data, typesize=1, clevel=_BLOSC_LEVELS[self._compression], shuffle=blosc.NOSHUFFLE, cname=self._compression
        )

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        h5attrs.write(self._frames.attrs, attrs)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameReader:
    """Random access to a frames file: ``len(reader)``, ``reader.clip(start, length)``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise ValueError(f"{self.path}: not a frames file ({err})") from err
        frames = self._file.get(FRAMES)
        problem = _frames_problem(frames)
        if problem:
            self._file.close()
            raise ValueError(f"{self.path}: not a frames file: {problem}")
        self._frames = frames
        self.attrs = h5attrs.read(self._frames.attrs)

    def __len__(self) -> int:
        return self._frames.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._frames.shape)

    def clip(self, start: int, length: int) -> np.ndarray:
        """Frames ``start`` .. ``start + length - 1`` as (length, H, W, C) uint8."""
        if start < 0 or start + length > len(self):
            raise IndexError(f"{self.path}: clip {start}..{start + length - 1} outside 0..{len(self) - 1}")
        return self._read(start, start + length)

    def blocks(self, size: int = 64):
        """Iterate over the video in blocks of ``size`` frames: memory stays bounded."""
        for start in range(0, len(self), size):
            yield start, self._read(start, min(start + size, len(self)))

    def _read(self, start: int, stop: int) -> np.ndarray:
        try:
            return self._frames[start:stop]
        except OSError as err:  # a damaged chunk: the Blosc filter fails, h5py names no file
            raise ValueError(f"{self.path}: frames {start}..{stop - 1} cannot be read ({err}); the file is "
                             "damaged: delete it and rerun its frames job") from None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _frames_problem(frames: Any) -> str | None:
    """Why an HDF5 object is not a video's frames as FrameWriter stores them, or None."""
    if frames is None:
        return f"no '{FRAMES}' dataset"
    if not isinstance(frames, h5py.Dataset):
        return f"'{FRAMES}' is a {type(frames).__name__}, not a dataset"
    if frames.ndim != 4 or frames.shape[3] not in (1, 3) or frames.dtype != np.uint8:
        return (f"'{FRAMES}' is {frames.dtype} of shape {frames.shape}; expected uint8 frames of shape "
                "(frames, height, width, 1 or 3 channels)")
    if frames.shape[0] == 0:
        return "it holds no frames"
    return None
