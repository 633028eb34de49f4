"""Loading ``torch.save`` checkpoints without running arbitrary pickled code.

Released research checkpoints (for example the STG-NF release of Hirschorn & Avidan, ICCV 2023)
store their command-line ``argparse.Namespace`` next to the weights. A plain ``torch.load``
would unpickle any object, and unpickling can execute code. Here the checkpoint is read with
PyTorch's weights-only unpickler, which accepts tensors, containers and primitives, plus an
explicit allow-list of extra classes (by default only ``argparse.Namespace``). Anything else is
refused with an error that names the file.
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any, Sequence

import torch

DEFAULT_ALLOWED_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the allow-list (or is not a checkpoint)."""


class UnreadableCheckpointError(ValueError):
    """A file that is not a complete torch checkpoint: empty, cut short, or of another format."""


def load_checkpoint(
    path: str | Path,
    allowed_globals: Sequence[type] = DEFAULT_ALLOWED_GLOBALS,
    map_location: str | torch.device = "cpu",
) -> Any:
    """Return the object stored at ``path``, unpickling only tensors, primitives and ``allowed_globals``."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        allowed = ", ".join(f"{cls.__module__}.{cls.__qualname__}" for cls in allowed_globals)
        raise UnsafeCheckpointError(
            f"{path}: refused to load: it holds pickled content outside the allow-list "
            f"(tensors, primitives, {allowed}) or is not a torch checkpoint. Details: {error}"
        ) from error
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, OSError) as error:  # torch's zip reader and unpickler on a damaged file
        raise UnreadableCheckpointError(
            f"{path}: not a complete torch checkpoint (empty, cut short by a download, or another format): "
            f"{type(error).__name__}: {error}"
        ) from error
