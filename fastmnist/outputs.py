"""Where a command's output files go, decided and checked once, before any work is done.

Every command that writes files (``train --save/--plot/--history``, ``predict --plot
--save-preprocessed``, ``bench --out``, ``sweep --out``) passes each path through
:func:`output_file` or :func:`output_dir` first, so a path that cannot be written is refused in
a second with the reason, not after an hour of training. A folder given for a file means that
file, under its default name, inside the folder; folders are never created silently beyond
the last level.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputError(ValueError):
    """An output path that cannot be written; the message names the path and the fix."""


def plot_formats() -> tuple[str, ...]:
    """File suffixes matplotlib can write (``.png``, ``.pdf``, ``.svg``, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted("." + k for k in FigureCanvasBase.get_supported_filetypes()))


MODEL_FORMATS = (".npz",)
HISTORY_FORMATS = (".json", ".csv")


def output_file(path, what: str, default_name: str, formats) -> Path:
    """The file ``path`` stands for, checked writable: a folder means ``default_name`` in it,
    a name without a suffix gets ``default_name``'s. Raises :class:`OutputError` for a suffix
    outside ``formats``, a missing or unwritable folder, or a folder where the file should be.
    """
    given = str(path)
    p = Path(path).expanduser()
    if p.is_dir() or given.endswith(("/", os.sep)):
        p = p / default_name
    elif not p.suffix:
        p = p.with_name(p.name + Path(default_name).suffix)
    if p.suffix.lower() not in formats:
        raise OutputError(f"{what} {given}: {p.suffix!r} is not a format fastmnist writes here; "
                          f"use one of {', '.join(formats)}")
    if p.is_dir():
        raise OutputError(f"{what} {given}: {p} is a folder; name a file")
    check_folder(p.parent, what, given)
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"{what} {given}: {p} exists and is not writable")
    return p


def output_dir(path, what: str) -> Path:
    """The folder ``path``, created if only its last level is missing, checked writable."""
    given = str(path)
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} {given}: {p} is a file, not a folder")
    if not p.exists():
        check_folder(p.parent, what, given)
        p.mkdir()
    check_folder(p, what, given)
    return p


def check_folder(folder: Path, what: str, given: str) -> None:
    """Refuse a ``folder`` that is missing, is a file (or lies under one), or takes no new files.

    Writability is tried, not guessed from permission bits: a superuser passes every
    ``os.access`` test, yet ``/proc`` still refuses new files.
    """
    folder = folder if str(folder) else Path(".")
    if not folder.is_dir():
        existing = next((p for p in folder.parents if p.exists()), None)
        if folder.exists() or (existing is not None and not existing.is_dir()):
            blocker = folder if folder.exists() else existing
            raise OutputError(f"{what} {given}: {blocker} is a file, not a folder")
        raise OutputError(f"{what} {given}: the folder {folder} does not exist; create it first "
                          f"(mkdir -p {folder}) or choose another path")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".fastmnist-probe-")
    except OSError as exc:
        raise OutputError(f"{what} {given}: cannot create files in {folder} "
                          f"({exc.strerror or exc}); choose another folder") from None
    os.close(fd)
    os.unlink(probe)
