"""evomm.direct_io: the bytes on disk are exactly the bytes written, whichever way they went.

Reference: the concatenation of what was written (compared byte for byte), across staging
buffer boundaries, with O_DIRECT, with it turned off, and with each of the two fallbacks
(refused at open, refused at the first write) forced.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from evomm import direct_io
from evomm.direct_io import DirectWriteFile

needs_o_direct = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this platform")


def _pieces(seed: int, sizes: list[int]) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]


# staging of 8 KiB (monkeypatched) so that pieces cross its boundary, fill it exactly, and span it
SIZES = [[5], [8192], [8192, 8192], [3, 8189, 1, 20000, 0, 4095], [1] * 100 + [70000], [12289]]


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("sizes", SIZES)
def test_file_holds_exactly_the_bytes_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool, sizes: list[int]) -> None:
    monkeypatch.setattr(direct_io, "STAGE_BYTES", 8192)
    pieces = _pieces(len(sizes), sizes)
    path = tmp_path / "out.bin"
    with DirectWriteFile(path, direct=direct) as f:
        for p in pieces:
            assert f.write(memoryview(p)) == len(p)
        if not direct:
            assert not f.direct
    assert path.read_bytes() == b"".join(pieces)  # the length too: no padding left behind


@needs_o_direct
def test_the_descriptor_says_what_the_object_says(tmp_path: Path) -> None:
    import fcntl

    f = DirectWriteFile(tmp_path / "out.bin", direct=True)
    # on file systems that take O_DIRECT (ext4, xfs: the project's machines) the flag is set;
    # on those that refuse it (tmpfs) the object fell back and says so
    assert bool(fcntl.fcntl(f.fileno(), fcntl.F_GETFL) & os.O_DIRECT) == f.direct
    f.write(b"x" * 5000)
    f.close()
    assert (tmp_path / "out.bin").read_bytes() == b"x" * 5000


def test_env_switch_turns_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(direct_io.ENV_DIRECT_IO, "0")
    assert not direct_io.direct_io_enabled()
    with DirectWriteFile(tmp_path / "a.bin") as f:
        f.write(b"abc")
        assert not f.direct
    assert (tmp_path / "a.bin").read_bytes() == b"abc"


def _write_all(path: Path, pieces: list[bytes]) -> DirectWriteFile:
    """Write ``pieces`` (O_DIRECT asked for), check the file holds them, return the closed file."""
    with DirectWriteFile(path, direct=True) as f:
        for p in pieces:
            f.write(p)
    assert path.read_bytes() == b"".join(pieces)
    return f


@needs_o_direct
def test_refused_at_open_falls_back_to_buffered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def no_direct(path, flags, *args):  # type: ignore[no-untyped-def]
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(direct_io.os, "open", no_direct)
    assert not _write_all(tmp_path / "b.bin", _pieces(1, [10, 9000, 3])).direct


@needs_o_direct
def test_refused_at_write_falls_back_to_buffered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    real_write = os.write

    def refuse_direct(fd: int, data):  # type: ignore[no-untyped-def]
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(direct_io, "STAGE_BYTES", 8192)
    monkeypatch.setattr(direct_io.os, "write", refuse_direct)
    assert not _write_all(tmp_path / "c.bin", _pieces(2, [100, 20000, 7])).direct


def test_other_write_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct_io.os, "write", full)
    f = DirectWriteFile(tmp_path / "d.bin")
    f.write(b"abc")
    with pytest.raises(OSError) as info:
        f.close()
    assert info.value.errno == errno.ENOSPC
    assert f.closed
