"""The editor timeline: a recording session's files placed on one OpenTimelineIO timeline.

``python -m ninja_publish.timeline MANIFEST`` (or ``ninja-publish-timeline``)
reads the manifest, probes every file with PyAV (``probe``), places each
part at its wall-clock offset from the earliest first frame, one video and
one audio track per guest (``build``, pure), and writes OpenTimelineIO,
Final Cut Pro X XML or Final Cut 7 XML (``formats``, ``cli``).
"""
