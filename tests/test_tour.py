"""``dl1 tour`` writes one report; a real headless browser loads it with every figure."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dl1.tour import main as tour_main


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _browser(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tour_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tour")
    empty = out / "no-data"
    empty.mkdir()
    assert tour_main(["--budget", "quick", "--parts", "gnn", "clip-zeroshot", "--data_dir", str(empty),
                      "--out_dir", str(out)]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir() and p.name != "no-data"]
    return folder


def test_report_lists_runs_and_skips(tour_dir):
    md = (tour_dir / "report.md").read_text()
    assert "| Graph neural networks" in md and "| ok |" in md
    assert "skipped" in md and "cifar10 not found" in md and "dl1 tour --clip_weights" in md
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(figures) >= 3 and all((tour_dir / f).exists() for f in figures)


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (make test installs it where apt exists)")
def test_report_renders_in_headless_chromium(tour_dir, tmp_path):
    page = (tour_dir / "report.html").resolve().as_uri()
    dom = _browser(["--dump-dom", page], tmp_path)
    match = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom.stdout)
    assert match, f"page did not finish loading: {dom.stderr[-500:]}"
    loaded, total = map(int, match.groups())
    assert total >= 3 and loaded == total
    shot = tmp_path / "report.png"
    _browser([f"--screenshot={shot}", "--window-size=1200,1600", page], tmp_path)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_unknown_part_is_a_usage_error():
    from dl1.errors import UsageError

    with pytest.raises(UsageError, match="unknown part"):
        tour_main(["--parts", "gpt2"])
