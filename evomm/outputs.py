"""Output directories: what a command may write to, and writing them whole or not at all.

Every evomm command that writes a directory (``merge``, ``export``, ``zoo build``, ``demo``,
``evolve --out``) follows one rule, the one git and pip follow for their targets:

* the target must not exist, or be an empty directory;
* with ``--overwrite`` it may also be a directory evomm itself wrote, recognised by the marker
  file :data:`MARKER` (a JSON file naming the command and the time) that evomm puts in every
  directory it creates as output; a run directory (``evomm evolve``, ``evomm demo``) is never
  replaced;
* whatever the flags, a file, a path under a file, a directory that holds a path the command
  reads (the run being exported, a parent model) and a directory on a read-only disk are refused.

:func:`check_output_target` applies the rule. :func:`staged_output` writes the output into a
hidden temporary sibling (``.NAME.partial-*``) and renames it into place only once complete, so
an error, Ctrl-C or a full disk leaves nothing behind; an old evomm directory is moved aside and
removed only after the new one is in place. An existing empty directory is kept (its mode and
owner, a mount point, a shell's current directory): the output is staged inside it and its
entries moved up at the end, the marker last. A full disk and a read-only file system become an
:class:`~evomm.errors.OutputError` that says where, how much was written and how much is free.

Example:
    >>> with staged_output(Path("out/child"), command="merge") as tmp:   # doctest: +SKIP
    ...     (tmp / "model.safetensors").write_bytes(data)
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evomm.errors import OutputError

#: Name of the JSON file evomm writes into every directory it creates as output.
MARKER = ".evomm-output"
#: Files by which outputs written before :data:`MARKER` existed are recognised (a merged or
#: exported checkpoint, a toy zoo); only evomm writes files of these names.
LEGACY_MARKERS = ("evomm_merge.json", "evomm_candidate.json", "zoo.json")
#: Commands whose output holds a run (an archive of evaluations): never replaced.
RUN_COMMANDS = frozenset({"evolve", "demo"})

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
#: How Rust I/O errors (safetensors, tokenizers) spell an errno in their message.
_RUST_OS_ERROR = re.compile(r"os error (\d+)")


# ---------------------------------------------------------------------------------------------
# the marker
# ---------------------------------------------------------------------------------------------


def write_marker(dir: Path, command: str) -> None:  # noqa: A002 - the documented name
    """Write :data:`MARKER` into ``dir`` (for directories written in place, e.g. a run directory).

    Args:
        dir: an existing directory evomm created.
        command: the evomm command that wrote it (``merge``, ``export``, ``evolve``...).
    """
    from evomm import __version__

    data = {"tool": "evomm", "command": command, "version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (Path(dir) / MARKER).write_text(json.dumps(data) + "\n", encoding="utf-8")


def read_marker(dir: Path) -> dict[str, Any] | None:
    """The marker of an evomm output directory, or ``None`` when ``dir`` is not one.

    A directory with a legacy file (:data:`LEGACY_MARKERS`) and no marker reads as
    ``{"tool": "evomm", "command": "<that file>"}``.
    """
    d = Path(dir)
    try:
        data = json.loads((d / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and data.get("tool") == "evomm":
        return data
    for name in LEGACY_MARKERS:
        if (d / name).is_file():
            return {"tool": "evomm", "command": name}
    return None


# ---------------------------------------------------------------------------------------------
# checking a target
# ---------------------------------------------------------------------------------------------


def _real(path: Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _nearest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return p
    return Path(path.anchor or "/")


def _probe_writable(directory: Path, out: Path, option: str) -> None:
    """Create and remove a file in ``directory`` (``os.access`` says yes to root, even on a
    read-only mount)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".evomm-probe-", dir=directory)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise _as_output_error(exc, out, option, doing=f"cannot create files in {directory}") from exc


def check_output_target(
    out: Path, *, overwrite: bool = False, reads: Sequence[Path] = (), option: str = "--out"
) -> None:
    """Raise :class:`OutputError` unless ``out`` may be written (see the module docstring).

    Args:
        out: the directory the command will create or replace.
        overwrite: the user asked to replace a previous evomm output (``--overwrite``).
        reads: paths the command reads (a run directory, parent models); ``out`` may not be one
            of them nor contain one, since replacing it would delete them. Symlinks are resolved.
        option: the command-line option that named ``out``, for messages.

    Raises:
        OutputError: ``out`` is a file, lies under a file, holds a path the command reads, is a
            non-empty directory evomm did not write (or did, without ``overwrite``), or its
            parent cannot be written.

    Example:
        >>> check_output_target(Path("/nonexistent-evomm-dir/child"))   # doctest: +SKIP
    """
    out = Path(out)
    target = _real(out)
    where = f"{option} {out}"
    for r in reads:
        read = _real(Path(r))
        if read == target or target in read.parents:
            what = "is" if read == target else "contains"
            raise OutputError(
                f"{where} {what} {r}, which this command reads; writing there would delete it: "
                f"choose a new directory for {option}"
            )
    existing = _nearest_existing(target)
    if not existing.is_dir():
        if existing == target:
            raise OutputError(f"{where} is a file; give a directory path (a new or empty directory)")
        raise OutputError(f"{where} lies under {existing}, which is a file; choose a directory path")
    if existing == target:
        _check_existing_dir(target, where, overwrite, option)
        existing = target.parent
    _probe_writable(existing, out, option)


def _check_existing_dir(target: Path, where: str, overwrite: bool, option: str) -> None:
    try:
        empty = not any(target.iterdir())
    except OSError as exc:
        raise _as_output_error(exc, target, option, doing=f"cannot list {target}") from exc
    if empty:
        return
    marker = read_marker(target)
    if marker is None:
        raise OutputError(
            f"{where} exists, is not empty and was not written by evomm (it has no {MARKER} file); "
            f"evomm never replaces such a directory: choose a new directory for {option}"
        )
    command = str(marker.get("command"))
    if command in RUN_COMMANDS:
        raise OutputError(
            f"{where} is a run directory of `evomm {command}`; a run is never replaced: continue it "
            f"with `evomm evolve --resume {target}`, or choose a new directory for {option}"
        )
    if not overwrite:
        raise OutputError(
            f"{where} exists and holds a previous evomm output ({command}); pass --overwrite to "
            f"replace it, or choose a new directory for {option}"
        )


# ---------------------------------------------------------------------------------------------
# writing a target whole
# ---------------------------------------------------------------------------------------------


def _errno_of(exc: BaseException) -> int | None:
    """The errno of ``exc`` or of an exception it was raised from (Rust I/O errors included)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e.errno
        m = _RUST_OS_ERROR.search(str(e))
        if m:
            return int(m.group(1))
        e = e.__cause__ or e.__context__
    return None


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _free(path: Path) -> int | None:
    try:
        return shutil.disk_usage(_nearest_existing(path)).free
    except OSError:
        return None


def _as_output_error(
    exc: BaseException, out: Path, option: str, *, doing: str = "", written: int | None = None,
    need: int | None = None,
) -> BaseException:
    """``exc`` as an :class:`OutputError` when it is a full disk or a read-only file system,
    otherwise ``exc`` itself (OSErrors become OutputErrors with their message)."""
    code = _errno_of(exc)
    where = f"{option} {out}"
    if code in _DISK_FULL:
        parts = [f"wrote {_human(written)} before it filled"] if written is not None else []
        if need is not None:
            parts.append(f"the output needs {_human(need)}")
        free = _free(Path(out).parent)
        if free is not None:
            parts.append(f"{_human(free)} free now")
        detail = f" ({', '.join(parts)})" if parts else ""
        return OutputError(
            f"disk full while writing {where}{detail}; the partial output was removed: free some "
            f"space or choose a directory on another disk"
        )
    if code in _READ_ONLY:
        why = "read-only file system" if code == errno.EROFS else "permission denied"
        return OutputError(
            f"cannot write {where}: {doing + ': ' if doing else ''}{why}; choose a directory you "
            f"can write to"
        )
    if isinstance(exc, OSError):
        return OutputError(f"cannot write {where}: {doing + ': ' if doing else ''}{exc}")
    return exc


def _default_mode(path: Path) -> None:
    """Give a ``mkdtemp`` directory (mode 0700) the mode ``mkdir`` would have given it."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o777 & ~mask)


def _swap(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` is moved aside first and removed
    only once ``tmp`` is in place (restored if the rename fails)."""
    if not os.path.lexists(target):
        os.replace(tmp, target)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    old = trash / "old"
    try:
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
    except BaseException:
        if not os.path.lexists(old):
            shutil.rmtree(trash, ignore_errors=True)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def _move_up(tmp: Path, target: Path) -> None:
    """Move the entries of ``tmp`` (inside the empty directory ``target``) into ``target``, the
    marker last, and remove ``tmp``; on failure the entries already moved are removed again."""
    names = sorted(os.listdir(tmp), key=lambda n: n == MARKER)
    moved: list[Path] = []
    try:
        for name in names:
            os.replace(tmp / name, target / name)
            moved.append(target / name)
        tmp.rmdir()
    except BaseException:
        for p in moved:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        raise


def _remove_empty(dirs: Sequence[Path]) -> None:
    """Remove the directories ``dirs`` (deepest first) as long as they are empty."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


@contextmanager
def staged_output(
    out: Path,
    *,
    overwrite: bool = False,
    reads: Sequence[Path] = (),
    command: str,
    option: str = "--out",
    need_bytes: int | None = None,
) -> Iterator[Path]:
    """Write a directory whole or not at all.

    :func:`check_output_target`, then yield a new hidden temporary sibling of ``out`` to write
    into (inside ``out`` when that is an existing empty directory). On success the
    :data:`MARKER` is written into it and it is renamed to ``out`` (a previous evomm directory
    there is moved aside and removed after the rename; into an empty ``out`` its entries are
    moved). On any
    exception the temporary directory (and any parent directory created for it) is removed and
    the exception re-raised; a full disk or a read-only file system is re-raised as an
    :class:`OutputError` that says where and how much space was written, needed and free.

    Args:
        out: the output directory.
        overwrite, reads, option: as :func:`check_output_target`.
        command: the evomm command, recorded in the marker.
        need_bytes: how much the output will take, when known: refused up front if the disk
            has less free, and quoted when the disk fills.

    Yields:
        The temporary directory (empty).

    Raises:
        OutputError: the target is refused, the disk is full or read-only.
    """
    out = Path(out)
    check_output_target(out, overwrite=overwrite, reads=reads, option=option)
    target = _real(out)
    free = _free(target.parent)
    if need_bytes is not None and free is not None and need_bytes > free:
        raise OutputError(
            f"not enough space for {option} {out}: the output needs {_human(need_bytes)}, "
            f"{_human(free)} is free there; free some space or choose a directory on another disk"
        )
    # an existing empty directory is kept (its mode, owner, a mount point, a shell's cwd): the
    # output is staged inside it and moved up at the end; otherwise it is staged beside it
    in_place = target.is_dir() and not any(target.iterdir())
    home = target if in_place else target.parent
    created = [p for p in (home, *home.parents) if not os.path.lexists(p)]
    try:
        home.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=home))
        _default_mode(tmp)
    except OSError as exc:
        _remove_empty(created)
        raise _as_output_error(exc, out, option, doing=f"cannot create a directory in {home}") from exc
    try:
        yield tmp
        write_marker(tmp, command)
        try:
            _move_up(tmp, target) if in_place else _swap(tmp, target)
        except OSError as exc:
            raise _as_output_error(exc, out, option, doing="cannot move the finished output into place") from exc
    except BaseException as exc:
        written = _size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        code = _errno_of(exc) if isinstance(exc, Exception) else None
        if code in _DISK_FULL or code == errno.EROFS:
            raise _as_output_error(exc, out, option, written=written, need=need_bytes) from exc
        raise
