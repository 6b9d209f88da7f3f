"""The distribution: at most four top-level names, typed, pinned to what is tested.

Builds the wheel of this checkout (no network: ``--no-build-isolation`` with
the test environment's setuptools and wheel) and reads what an install would
put into site-packages.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ninja_publish import aiortc_adapter

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, timeout=300)
    (path,) = out.glob("*.whl")
    return zipfile.ZipFile(path)


def _read(wheel: zipfile.ZipFile, suffix: str) -> str:
    (name,) = [n for n in wheel.namelist() if n.endswith(suffix)]
    return wheel.read(name).decode()


def test_at_most_four_top_level_names(wheel):
    names = set(_read(wheel, ".dist-info/top_level.txt").split())
    assert names == {"publish", "multi_peer_client", "plugins", "ninja_publish"}
    top = {n.split("/")[0].removesuffix(".py") for n in wheel.namelist() if ".dist-info/" not in n}
    assert top == names


def test_the_package_is_typed(wheel):
    assert "ninja_publish/py.typed" in wheel.namelist()


def test_aiortc_and_av_are_pinned_to_the_adapters_range(wheel):
    requires = [line.split(":", 1)[1].strip() for line in _read(wheel, ".dist-info/METADATA").splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    aiortc = next(r for r in requires if r.startswith("aiortc"))
    bounds = dict((op, tuple(map(int, v.split(".")))) for op, v in re.findall(r"(>=|<)\s*([\d.]+)", aiortc))
    low, high = aiortc_adapter.SUPPORTED_AIORTC
    assert bounds == {">=": low, "<": high}, aiortc
    av = next(r for r in requires if r.startswith("av"))
    assert "<" in av and ">=" in av, av
