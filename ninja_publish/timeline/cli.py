"""``ninja-publish-timeline MANIFEST [--format otio|fcpxml|xmeml] [-o FILE]``: the editor timeline.

Reads a recording session's manifest, probes its files, builds the timeline
and writes it (next to the manifest by default: ``{prefix}_{unix}.otio``,
``.fcpxml`` or ``.xml``).  A part whose file is missing or unreadable is
skipped with one line on stderr; exit code 1 when nothing can be placed or
written, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Optional

from ninja_publish.timeline import formats
from ninja_publish.timeline.build import Recording, build_timeline, parts_from_manifest, timeline_rate
from ninja_publish.timeline.probe import ProbeError, probe

PROG = "ninja-publish-timeline"
MANIFEST_SUFFIX = ".manifest.json"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Build an editor timeline (OpenTimelineIO, Final Cut Pro X or 7 XML) from a "
        "recording manifest: every guest's parts placed at their wall-clock offsets, in sync.")
    parser.add_argument("manifest", help="the {prefix}_{unix}.manifest.json of a recording")
    parser.add_argument("--format", choices=list(formats.FORMATS),
                        help="otio (default), fcpxml (Final Cut Pro X) or xmeml (Final Cut 7 XML: Premiere, "
                        "Resolve); default: from the -o suffix (.otio, .fcpxml, .xml)")
    parser.add_argument("-o", "--output", help="file to write (default: next to the manifest)")
    parser.add_argument("--rate", type=_rate, help="timeline frame rate, e.g. 25 or 30000/1001 "
                        "(default: the most common video rate of the files, as an editor rate)")
    parser.add_argument("--name", help="timeline name (default: the room)")
    return parser.parse_args(argv)


def _rate(text: str) -> Fraction:
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a rate: {text!r}") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r}")
    return rate


def default_output(manifest: str, fmt: formats.Format) -> str:
    base = manifest[:-len(MANIFEST_SUFFIX)] if manifest.endswith(MANIFEST_SUFFIX) else os.path.splitext(manifest)[0]
    return base + fmt.suffix


def resolve_file(recorded: str, manifest_dir: Path) -> Optional[Path]:
    """Where a recorded file is now: as recorded, else beside the manifest (a moved folder)."""
    path = Path(recorded)
    for candidate in (path if path.is_absolute() else manifest_dir / path, manifest_dir / path.name):
        if candidate.is_file():
            return candidate.absolute()
    return None


def warn(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def load_recordings(manifest_path: str) -> tuple[dict, list[Recording]]:
    """The manifest and its parts with their probes; parts that cannot be probed are skipped (one line each)."""
    with open(manifest_path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    if not isinstance(manifest, dict):
        raise ValueError("not a recording manifest")
    manifest_dir = Path(manifest_path).absolute().parent
    recordings = []
    for entry in parts_from_manifest(manifest):
        label = f"{entry['stream_id']} part {entry['part']}"
        path = resolve_file(entry["file"], manifest_dir)
        if path is None:
            warn(f"skipping {label}: {entry['file']} not found")
            continue
        try:
            media = probe(str(path))
        except ProbeError as exc:
            warn(f"skipping {label}: cannot read {path}: {exc}")
            continue
        recordings.append(Recording(str(entry["stream_id"]), int(entry["part"]), str(path),
                                    float(entry["first_frame_time"]), media))
    return manifest, recordings


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        fmt = formats.choose(args.format, args.output)
        formats.check_adapter(fmt)
        manifest, recordings = load_recordings(args.manifest)
    except (OSError, ValueError, formats.FormatError) as exc:
        warn(str(exc))
        return 1
    if not recordings:
        warn(f"nothing to place: no file of {args.manifest} could be read")
        return 1
    name = args.name or manifest.get("room") or Path(args.manifest).name.removesuffix(MANIFEST_SUFFIX)
    try:
        rate = formats.rate_for(fmt, args.rate or timeline_rate(recordings))
    except formats.FormatError as exc:
        warn(str(exc))
        return 1
    timeline = build_timeline(recordings, str(name), rate=rate, frames=fmt.frames,
                              metadata={"manifest": str(Path(args.manifest).absolute())})
    output = args.output or default_output(args.manifest, fmt)
    try:
        formats.write(formats.prepare(timeline, fmt), output, fmt)
    except Exception as exc:  # noqa: BLE001 - an adapter's failure: one line, exit code 1
        warn(f"could not write {output}: {exc}")
        return 1
    guests = {r.stream_id for r in recordings}
    print(f"wrote {output} ({fmt.description}): {len(guests)} guests, {len(recordings)} parts, "
          f"{len(timeline.tracks)} tracks, {float(rate):g} fps, {timeline.duration().to_seconds():.1f} s")
    return 0
