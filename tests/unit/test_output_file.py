"""GatheredOutput (ninja_publish/recording/output_file.py): writes reach the file only on flush, in place."""

from __future__ import annotations

import os

import av
import pytest

from ninja_publish.recording.output_file import GatheredOutput


def test_writes_gather_until_flush_and_seeks_rewrite_in_place(tmp_path) -> None:
    path = tmp_path / "out.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        out = GatheredOutput(fd)
        out.write(b"header--")
        out.write(b"body1")
        assert out.pending == 13 and os.path.getsize(path) == 0  # nothing in the file yet
        out.flush()
        assert out.size == 13 and path.read_bytes() == b"header--body1"
        out.write(b"body2")
        assert out.seek(0) == 0
        out.write(b"HEADER")  # a rewrite of the start, as Matroska's trailer does
        assert out.seek(0, os.SEEK_END) == 18 and out.tell() == 18
        out.write(b"!")
        out.flush()
        assert path.read_bytes() == b"HEADER--body1body2!" and out.size == 19
    finally:
        os.close(fd)


def test_a_failed_flush_breaks_the_output_and_keeps_the_whole_size(tmp_path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)  # every write fails (EBADF), as a full disk fails them
    try:
        out = GatheredOutput(fd)
        out.write(b"x" * 100)
        with pytest.raises(OSError):
            out.flush()
        assert out.broken and out.size == 0 and out.pending == 0
        out.write(b"more")  # dropped: the muxer is closing the container
        assert out.pending == 0
        out.flush()  # nothing to write
    finally:
        os.close(fd)


def test_pyav_writes_a_matroska_file_through_it(tmp_path) -> None:
    """The container's header, packets and trailer (written back into the header) decode."""
    path = tmp_path / "a.mka"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    out = GatheredOutput(fd)
    container = av.open(out, "w", format="matroska")
    stream = container.add_stream("libopus", rate=48000, layout="mono")
    frame = av.AudioFrame(format="s16", layout="mono", samples=960)
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = 48000
    for i in range(50):
        frame.pts = i * 960
        container.mux(stream.encode(frame))
        out.flush()
    container.mux(stream.encode(None))
    container.close()
    out.flush()
    os.close(fd)
    assert out.size == os.path.getsize(path) > 0
    with av.open(str(path)) as reading:
        assert reading.duration and reading.duration > 900_000  # the trailer's duration: about 1 s
        assert sum(1 for _ in reading.demux(audio=0)) >= 50
