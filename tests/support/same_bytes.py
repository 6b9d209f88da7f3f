"""Was a recording made of a source file's own packets, byte for byte?

A publisher that sends a file "without re-encoding" must put the file's
encoded frames on the wire unchanged, so the recorder's file holds the same
frames.  Both files are demuxed with PyAV and each video frame reduced to
what a sender may not change: for VP8 the whole frame; for H.264 its slice
NAL units (types 1 and 5), since parameter sets, access unit delimiters and
SEI may legitimately be added or dropped on the way (the recorder repeats
SPS/PPS before keyframes) and start codes and trailing zero bytes vary.  A
re-encoded frame has other slices, so it matches no frame of the source.
"""

from __future__ import annotations

import av

#: H.264 NAL unit types that carry the picture itself.
H264_SLICES = (1, 5)


def h264_nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B buffer, without start codes or trailing zero bytes."""
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    units = []
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(data)
        unit = data[start:end].rstrip(b"\x00")
        if unit:
            units.append(unit)
    return units


def picture_bytes(codec: str, data: bytes) -> bytes:
    """The part of one encoded video frame that passthrough must keep unchanged."""
    if codec == "h264":
        return b"".join(b"\x00\x00\x01" + u for u in h264_nal_units(data) if u[0] & 0x1F in H264_SLICES)
    return data


def video_pictures(path: str, codec: str) -> list[bytes]:
    """:func:`picture_bytes` of every video packet of a file, in file order."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        return [picture_bytes(codec, bytes(p)) for p in container.demux(stream) if p.size]


def loop_positions(recorded: list[bytes], source: list[bytes]) -> list[int]:
    """Where each recorded frame is in the source (which must have distinct frames).

    Raises AssertionError naming the first recorded frame that is none of the
    source's frames (a re-encoded or altered frame).
    """
    index = {picture: i for i, picture in enumerate(source)}
    assert len(index) == len(source), "the source repeats a frame: positions would be ambiguous"
    positions = []
    for k, picture in enumerate(recorded):
        if picture not in index:
            raise AssertionError(f"recorded frame {k} of {len(recorded)} ({len(picture)} bytes) is none of the "
                                 f"source's {len(source)} frames: not sent as is")
        positions.append(index[picture])
    return positions
