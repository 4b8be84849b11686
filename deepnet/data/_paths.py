"""Where dataset files are looked up: ``--data-dir``, ``$DEEPNET_DATA/<name>``, a user cache."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataError", "candidate_dirs", "find_data_file", "cache_dir"]


class DataError(ValueError):
    """A dataset file is missing, corrupt or malformed. The message says how to fix it."""


def cache_dir(name: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "deepnet" / name


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for dataset ``name``, in order. ``data_dir`` may be the dataset's own
    folder or a parent holding ``<name>/``."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / name]
    if os.environ.get("DEEPNET_DATA"):
        dirs.append(Path(os.environ["DEEPNET_DATA"]) / name)
    dirs.append(cache_dir(name))
    return dirs


def find_data_file(name: str, filename: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first existing ``filename`` for dataset ``name``, or None."""
    for folder in candidate_dirs(name, data_dir):
        path = folder / filename
        if path.is_file():
            return path
    return None


def missing_file_error(name: str, filename: str, data_dir: str | os.PathLike | None) -> DataError:
    looked = ", ".join(str(d) for d in candidate_dirs(name, data_dir))
    return DataError(
        f"Dataset {name!r}: file {filename!r} not found (looked in {looked}). "
        f"Pass --data-dir DIR or set DEEPNET_DATA to a folder holding {name}/{filename}."
    )
