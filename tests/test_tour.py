"""``dl1 tour`` writes one report; a real headless browser loads it with every figure."""

import re
import subprocess
from pathlib import Path

import pytest
from conftest import chromium, need

from dl1.tour import main as tour_main


def _browser(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=120)


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
    assert "| [Graph neural networks" in md and "| ok |" in md
    assert "skipped" in md and "cifar10 not found" in md and "dl1 tour --clip_weights" in md
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(figures) >= 3 and all((tour_dir / f).exists() for f in figures)


def test_report_renders_in_headless_chromium(tour_dir, tmp_path):
    need("Chromium", chromium() is not None, "make test (apt-get install chromium)")
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


def test_report_reads_like_a_report(tour_dir):
    """Contents with working links, a caption per figure saying what to look for, each figure once, and the command
    column in the HTML as in the Markdown."""
    from html.parser import HTMLParser

    page = (tour_dir / "report.html").read_text()

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.ids, self.links, self.images, self.captions, self.headers, self.codes = set(), [], [], [], [], []
            self._in = None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if "id" in attrs:
                self.ids.add(attrs["id"])
            if tag == "a" and attrs.get("href", "").startswith("#"):
                self.links.append(attrs["href"][1:])
            if tag == "img":
                self.images.append(attrs["src"])
            self._in = tag

        def handle_endtag(self, tag):
            self._in = None

        def handle_data(self, data):
            if self._in == "figcaption":
                self.captions.append(data)
            elif self._in == "th":
                self.headers.append(data)
            elif self._in == "code":
                self.codes.append(data)

    c = Collect()
    c.feed(page)
    assert {"summary", "part-gnn", "part-clip-zeroshot"} <= set(c.links) and set(c.links) <= c.ids
    assert len(c.images) == len(set(c.images)) == len(c.captions) == 5  # gnn's five figures, once each
    assert all(len(cap) > 40 and "gnn_" not in cap and "no caption" not in cap for cap in c.captions)
    assert c.headers[-1] == "command" and "dl1 run gnn" in c.codes
    md = (tour_dir / "report.md").read_text()
    assert md.index("Contents:") < md.index("## Summary") < md.index("## Graph neural networks")
    assert md.count("![") == 5 and "| `dl1 run gnn` |" in md
    assert "(#part-gnn)" in md and '<a id="part-gnn"></a>' in md


def test_figures_are_ordered_once_each_and_captioned():
    from dl1.report.tour import select_figures

    names = ["confusion_matrix.png", "f_beta.png", "curves.png"]
    assert [n for n, _ in select_figures("mlp-pytorch", names)] == ["curves.png", "confusion_matrix.png",
                                                                   "f_beta.png"]
    aae = ["aae_curves.png", "aae_latent.png", "aae_reconstructions.png", "aae_samples.png",
           *(f"{kind}_epoch_{e}.png" for kind in ("reconstruction", "samples") for e in range(3))]
    assert [n for n, _ in select_figures("aae", aae)] == ["aae_curves.png", "aae_reconstructions.png",
                                                          "aae_samples.png", "aae_latent.png"]
    vae = ["vae_learning_curve.png", "vae_manifold.png", *(f"vae_samples_epoch_{e:03d}.png" for e in range(4))]
    chosen = select_figures("vae", vae)
    assert [n for n, _ in chosen] == ["vae_learning_curve.png", "vae_samples_epoch_000.png",
                                      "vae_samples_epoch_003.png", "vae_manifold.png"]
    assert len({c for _, c in chosen}) == 4
    assert "no caption" in select_figures("gnn", ["new_figure.png"])[0][1]  # never hidden, never unlabelled
