"""Where distillscope keeps caches and runs. Environment variables override (tests use them)."""

import os
from pathlib import Path

import platformdirs

APP = "distillscope"


def cache_dir() -> Path:
    """Converted models and activation caches. Override with DISTILLSCOPE_CACHE_DIR."""
    root = os.environ.get("DISTILLSCOPE_CACHE_DIR") or platformdirs.user_cache_dir(APP)
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Runs, settings and user data. Override with DISTILLSCOPE_DATA_DIR."""
    root = os.environ.get("DISTILLSCOPE_DATA_DIR") or platformdirs.user_data_dir(APP)
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def resources_dir() -> Path:
    """The repository's resources/ folder (demo corpus and shipped artifacts)."""
    return Path(__file__).resolve().parent.parent / "resources"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename over it: a kill leaves old or new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
