"""The features HDF5 layout (one file per video) and what its attributes say about where the features came from.

Layout: dataset ``features`` of shape (T, views, D), float32, snippet-first as RTFM stores its I3D features
(views = 10 ten-crop views, or 1); for SSRL (Li et al., ECCV 2022) one more dataset per patch grid,
``patches_<rows>x<cols>`` of shape (T, rows*cols, D), patches row-major, the same T. File attributes: the
format tag, the feature set and preset parameters, ``n_frames`` of the video and the snippet rule's ``tail``
(so scores can be brought back to frames), the backbone weights (sha256, or "random-init") and the source.
``FeatureSource`` turns those attributes into the words a report row needs, including whether the numbers
can stand beside a paper's.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines import h5attrs

if TYPE_CHECKING:  # h5py is imported where a file is opened: the workflow imports this module to build its DAG
    import h5py

FORMAT = "vadbench-features-1"
FEATURES = "features"
RANDOM_INIT = "random-init"
# Rows per HDF5 chunk: reading one view of a ten-crop file touches only that view's chunks.
CHUNK_SNIPPETS = 64


def feature_set_name(clip: str, patches: str | None = None) -> str:
    """Name of a feature set (a clip preset, optionally with a patch preset), used in paths: ``rtfm_ssrl_patches``."""
    return clip if patches is None else f"{clip}_{patches}"


def patch_dataset(grid: tuple[int, int]) -> str:
    """Name of the dataset holding one grid's patch features, e.g. ``patches_2x3``."""
    return f"patches_{grid[0]}x{grid[1]}"


def create_dataset(handle: h5py.File, name: str, n_snippets: int, views: int, dim: int) -> h5py.Dataset:
    """An empty (T, views, D) float32 dataset, chunked per view so a single view reads on its own."""
    chunks = (max(1, min(n_snippets, CHUNK_SNIPPETS)), 1, dim) if n_snippets else None
    return handle.create_dataset(name, shape=(n_snippets, views, dim), dtype=np.float32, chunks=chunks)


def write_attrs(handle: h5py.File, attrs: dict[str, Any]) -> None:
    """File attributes; nested values are stored as JSON."""
    h5attrs.write(handle.attrs, attrs)


class FeatureReader:
    """Read access to a features file: whole or by snippet range, one view or all, patch grids."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            import h5py

            self._file = h5py.File(self.path, "r")
            self._features = self._file[FEATURES]
        except (OSError, KeyError) as err:
            raise ValueError(f"{self.path}: not a features file ({err})") from err
        self.attrs = h5attrs.read(self._file.attrs)
        if self.attrs.get("format") != FORMAT:
            raise ValueError(f"{self.path}: format {self.attrs.get('format')!r}, expected {FORMAT!r}")

    @property
    def n_snippets(self) -> int:
        return self._features.shape[0]

    @property
    def n_views(self) -> int:
        return self._features.shape[1]

    @property
    def feature_dim(self) -> int:
        return self._features.shape[2]

    @property
    def n_frames(self) -> int:
        return int(self.attrs["n_frames"])

    @property
    def tail(self) -> str:
        """The snippet rule's tail: "loop_pad" (T = ceil(n/16)) or "drop" (T = floor(n/16))."""
        return str(self.attrs["tail"])

    @property
    def grids(self) -> tuple[tuple[int, int], ...]:
        """Patch grids present in the file, in the order they were written."""
        return tuple(tuple(grid) for grid in self.attrs.get("patch_grids", []))

    def features(self, start: int = 0, stop: int | None = None, view: int | None = None) -> np.ndarray:
        """Snippets ``start:stop`` as (n, views, D), or (n, D) for one ``view``."""
        stop = self.n_snippets if stop is None else stop
        if view is None:
            return self._features[start:stop]
        return self._features[start:stop, view]

    def patches(self, grid: tuple[int, int], start: int = 0, stop: int | None = None) -> np.ndarray:
        """Patch features of one grid for snippets ``start:stop``, (n, rows*cols, D)."""
        name = patch_dataset(grid)
        if name not in self._file:
            raise KeyError(f"{self.path}: no {grid[0]}x{grid[1]} patch features (this file has grids {self.grids})")
        stop = self.n_snippets if stop is None else stop
        return self._file[name][start:stop]

    def blocks(self, size: int) -> Iterator[tuple[int, int]]:
        """(start, stop) snippet ranges of at most ``size`` snippets covering the file."""
        for start in range(0, self.n_snippets, size):
            yield start, min(start + size, self.n_snippets)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "FeatureReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# The key under which the workflow hands a feature method the description of its features per dataset
# (workflow/rules/feature_inputs.smk fills it from the features section of the config). Here, beside
# FeatureSource, so that the workflow need not import the weak methods to build its DAG.
FEATURE_SOURCE_KEY = "feature_source"
# The key under which it hands the same method each dataset's snippet tail ("loop_pad" or "drop"),
# which decides how its frame scores are evaluated (pipelines.weak_methods.protocol).
FEATURE_TAIL_KEY = "feature_tail"


@dataclass(frozen=True)
class FeatureSource:
    """Where a method's features came from, as far as comparing with its paper is concerned.

    ``backbones`` pairs each backbone with its weights ("sha256:...", a file name, or "random-init");
    published features name the upstream folder instead. ``missing_streams`` lists streams the preset wants
    but the features lack (the flow stream when features.flow is off).
    """

    feature_set: str
    origin: str  # "extracted" | "published"
    backbones: tuple[tuple[str, str], ...]
    tail: str = "loop_pad"
    spatial_scale: float = 1.0
    missing_streams: tuple[str, ...] = ()
    patches_reconstructed: bool = False

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "FeatureSource":
        """The source recorded in a features file's attributes."""
        return cls(
            feature_set=attrs["feature_set"],
            origin=attrs["origin"],
            backbones=tuple((name, weights) for name, weights in sorted(attrs["backbones"].items())),
            tail=attrs["tail"],
            spatial_scale=float(attrs.get("spatial_scale", 1.0)),
            missing_streams=tuple(attrs.get("missing_streams", [])),
            patches_reconstructed=bool(attrs.get("patches_reconstructed", False)),
        )

    def differences(self, paper_feature_set: str) -> list[str]:
        """Why numbers on these features do not stand beside the paper's (empty when they do)."""
        found = []
        if self.feature_set != paper_feature_set:
            found.append(f"the paper used {paper_feature_set} features")
        random = [name for name, weights in self.backbones if weights == RANDOM_INIT]
        if random:
            found.append(f"backbone {', '.join(random)} randomly initialised")
        if self.spatial_scale != 1.0:
            found.append(f"frames at {self.spatial_scale:g} of the preset's size")
        if self.missing_streams:
            found.append(f"no {'/'.join(self.missing_streams)} stream")
        return found

    def describe(self, paper_feature_set: str) -> str:
        """One phrase for a report row, ending in NOT COMPARABLE and the reasons where that applies."""
        weights = ", ".join(f"{name} {value}" for name, value in self.backbones)
        snippets = ("T = ceil(n/16), last snippet loop-padded, scored on 16 * ceil(n/16) frames as RTFM's gt "
                    "files do" if self.tail == "loop_pad"
                    else "T = floor(n/16), frames after the last whole snippet unscored")
        text = f"features {self.feature_set} ({self.origin}; {weights}; {snippets})"
        if self.patches_reconstructed:
            text += ", patch features reconstructed (SSRL's patch protocol is unpublished)"
        reasons = self.differences(paper_feature_set)
        if reasons:
            text += "; NOT COMPARABLE to the paper: " + "; ".join(reasons)
        return text
