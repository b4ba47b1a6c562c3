"""Run folders: every run writes a new folder, staged and renamed into place when complete.

Nothing is overwritten silently and nothing is half-written: output goes to a hidden staging
folder beside the target and is moved into place only when the run succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def next_run_dir(root: str | Path, prefix: str) -> Path:
    """The first ``root/prefix-NNN`` that does not exist yet."""
    root = Path(root)
    i = 1
    while (root / f"{prefix}-{i:03d}").exists():
        i += 1
    return root / f"{prefix}-{i:03d}"


def check_output_dir(out: str | Path, *, marker: str, overwrite: bool = False, arg: str = "out") -> Path:
    """Refuse an output folder that is a file, holds something that is not an fgdm run (recognised
    by ``marker``), or holds a run without ``overwrite``. Call it before any long work."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{arg} {str(out)!r} exists and is not a folder")
        if any(out.iterdir()):
            if not (out / marker).exists():
                raise ValueError(f"{arg} {str(out)!r} is not empty and holds no fgdm run; refusing to write there")
            if not overwrite:
                raise ValueError(f"{arg} {str(out)!r} already holds a run; pass --overwrite to replace it")
    return out


@contextmanager
def staged_output(out: str | Path, *, marker: str, overwrite: bool = False, arg: str = "out") -> Iterator[Path]:
    """Yield a staging folder that becomes ``out`` when the block finishes without error.

    ``out`` may be missing or an empty folder. If it holds an earlier run (recognised by the file
    ``marker``) it is replaced only with ``overwrite``; any other non-empty folder is refused.
    """
    out = check_output_dir(out, marker=marker, overwrite=overwrite, arg=arg)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{arg} {str(out)!r} cannot be created: {e.strerror}") from None
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    promote(stage, out)


def promote(stage: Path, out: Path) -> None:
    """Move a finished staging folder to ``out``, replacing what is there (checked by the caller)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    stage.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | Path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")
