"""What every output records about how it was made: versions, hashes, parameters."""
from __future__ import annotations

import functools
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("vadbench", "numpy", "h5py", "torch", "scikit-learn", "opencv-contrib-python-headless", "snakemake")


@functools.cache
def versions() -> dict[str, str]:
    """Versions of Python and the packages that can change a result."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_folder(folder: str | Path, files: list[Path]) -> str:
    """One sha256 over the names and contents of the files of a frame folder, in order."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(Path(path).name.encode())
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def config_hash(section: Any) -> str:
    """Short stable hash of a JSON-able config section, shown in report rows."""
    text = json.dumps(section, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
