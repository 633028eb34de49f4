"""What every output records about how it was made: versions, hashes, parameters."""
from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("vadbench", "numpy", "scipy", "h5py", "torch", "scikit-learn", "opencv-contrib-python-headless", "simplejpeg",
             "snakemake", "ai-edge-litert")
REPO = Path(__file__).resolve().parents[1]


@functools.cache
def versions() -> dict[str, str]:
    """Versions of Python, the packages that can change a result, and the code's own revision."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["vadbench_revision"] = source_revision()
    return found


#: The folders whose files are the code: a new, untracked file there (a method being added) changes it too.
CODE_FOLDERS = ("models", "pipelines", "workflow")


def source_revision(repo: Path = REPO) -> str:
    """The git commit the code runs from, with "+changes" when tracked files differ from it or the
    code folders hold files git does not track yet (and does not ignore): the package version stays
    0.1.0 from commit to commit. "unknown" outside a git checkout."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "--verify", "HEAD")
        if head.returncode != 0:
            return "unknown"
        changed = (git("diff", "--quiet", "HEAD", "--").returncode != 0
                   or bool(git("ls-files", "--others", "--exclude-standard", "--", *CODE_FOLDERS).stdout.strip()))
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return head.stdout.strip() + ("+changes" if changed else "")


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
    """Short stable hash of a JSON-able config section, shown in report rows. Numbers are hashed
    as floats, so ``[2, 1]`` and ``[2.0, 1.0]`` (as YAML and the evaluation records write them)
    give one hash."""
    text = json.dumps(_numbers_as_floats(section), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _numbers_as_floats(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _numbers_as_floats(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers_as_floats(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
