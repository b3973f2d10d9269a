"""Folders of results that are safe to write: ``descend lab``'s report and ``descend compare``'s tables.

A folder is built in a scratch folder beside ``--out`` and moved into place only once complete, so an
interrupted run leaves the previous folder as it was. ``--out`` may be new, empty, or a previous
folder descend wrote: its marker file (``.descend-report``) lists the files descend wrote there, and a
previous folder holding anything else is refused (``OutputError``). Nothing descend did not write is
ever deleted.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

MARKER = ".descend-report"  # written into every folder descend publishes; lists the files descend wrote there


class OutputError(ValueError):
    """``--out`` names a place the results must not be written to (it would replace what descend did not write)."""


def written_by_descend(folder: Path) -> set[str] | None:
    """The files a previous folder lists in its marker (with the marker), or None without a readable marker."""
    try:
        listed = json.loads((folder / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {str(name) for name in listed if isinstance(name, str) and "/" not in name} | {MARKER}


def check_out(out: Path) -> None:
    """Raises ``OutputError`` unless ``out`` is absent, an empty folder, or a previous folder holding only its files."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a folder; choose a new or empty folder")
    present = set(os.listdir(out))
    if not present:
        return
    ours = written_by_descend(out)
    if ours is None:
        raise OutputError(f"--out {out}: the folder is not empty and holds no descend report ({MARKER}); "
                          "choose a new or empty folder")
    foreign = sorted(present - ours)
    if foreign:
        raise OutputError(f"--out {out}: the previous report's folder also holds {', '.join(foreign[:3])}"
                          f"{' …' if len(foreign) > 3 else ''}, which descend did not write; move it or choose "
                          "another folder")


def retire(folder: Path) -> None:
    """Deletes a previous folder: only the files its marker lists, then the folder if that leaves it empty."""
    for name in written_by_descend(folder) or ():
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass  # something appeared that descend did not write: leave it


def publish(scratch: Path, out: Path, written_by: str) -> None:
    """Moves the finished ``scratch`` folder into place as ``out``, with a marker listing its files;
    an existing previous folder (or an empty one) is replaced."""
    check_out(out)  # again: the folder may have changed during the run
    files = sorted(os.listdir(scratch))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(scratch, 0o777 & ~umask)  # mkdtemp made it private; results are an ordinary folder
    (scratch / MARKER).write_text(json.dumps({"written_by": written_by, "files": files}, indent=1))
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
        os.replace(out, retired / "report")
        os.replace(scratch, out)
        retire(retired / "report")
        try:
            retired.rmdir()
        except OSError:
            pass
    else:
        os.replace(scratch, out)


@contextlib.contextmanager
def scratch_for(out: Path, written_by: str) -> Iterator[Path]:
    """A scratch folder beside ``out`` to write the results into: published as ``out`` when the block
    completes, deleted (it holds only what the block wrote) when the block raises or is interrupted."""
    out = Path(os.path.abspath(out))
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield scratch
        publish(scratch, out, written_by)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
