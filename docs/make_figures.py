"""``make docs-figures``: the figures of the documentation site, from one real run of the default tour.

Runs ``dl1 tour`` (default budget: every part that can run on this machine, on real data) into a temporary folder,
or reads finished tour folders (``--tour_dir``), then copies the tour figures that the site's pages show (each
``figures/tour/NAME.png`` named in ``docs/``) into ``docs/figures/tour/`` (re-encoded as palette PNGs, a quarter of
the size, the same to the eye) and writes ``docs/figures/tour/tour.json``: when, on which CPU, each part's status,
seconds, numbers and command. The part pages show these figures; the getting-started page shows the times. Figures
of parts that could not run here (CIFAR, CLIP weights) are not made up: their pages say which command makes them.

    python docs/make_figures.py [--budget default] [--tour_dir runs/tour/<timestamp> ...] [--out docs/figures/tour]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), with the number of cores this process may use."""
    import os

    name, details = platform.processor() or platform.machine(), []
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                    if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        name = info.get("model name", name)
        details.append(f"family {info.get('cpu family', '?')} model {info.get('model', '?')}")
        flags = info.get("flags", "").split()
        details += ["AVX-512"] if "avx512f" in flags else ["AVX2"] if "avx2" in flags else []
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({', '.join(details)}), {cores} cores" if details else f"{name}, {cores} cores"


def run_tour(budget: str, out_dir: Path) -> Path:
    """Run ``dl1 tour`` in a fresh process and return its folder; a failed part fails this command."""
    command = [sys.executable, "-m", "dl1", "tour", "--budget", budget, "--out_dir", str(out_dir)]
    print("$", " ".join(command), flush=True)
    if subprocess.run(command).returncode != 0:
        raise SystemExit("error: the tour failed (see above); no figure was changed")
    (folder,) = [p for p in out_dir.iterdir() if p.is_dir() and p.name != "cache"]
    return folder


def compact_png(source: Path, target: Path) -> None:
    """Copy a matplotlib PNG as a 256-colour palette PNG (a quarter of the bytes; these figures have few colours)."""
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            target, optimize=True)


def referenced(docs: Path = HERE) -> set[str]:
    """The tour figures the site's pages show (``figures/tour/NAME.png`` in any page): the ones this command keeps."""
    import re

    return {m for page in docs.rglob("*.md") for m in re.findall(r"figures/tour/([\w.-]+\.png)", page.read_text())}


def parts_of(tour_dir: Path) -> list[dict]:
    """Status, seconds, numbers and command of each part, read back from the tour's ``report.md`` summary table."""
    rows, current = [], None
    lines = (tour_dir / "report.md").read_text().splitlines()
    budget = lines[0].split("(", 1)[1].split(" budget", 1)[0] if " budget" in lines[0] else "?"
    start = lines.index("## Summary")
    for line in lines[start + 4:]:  # after the header and its rule
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        part, status, metric, ours, reference, took, command = (cells + [""] * 7)[:7]
        if part:
            key = part.split("](#part-", 1)[1].rstrip(")") if "](#part-" in part else part
            current = {"key": key, "budget": budget, "status": status, "seconds": float(took.rstrip(" s") or 0),
                       "command": command.strip("`"), "numbers": []}
            rows.append(current)
        if current is not None and metric:
            current["numbers"].append({"metric": metric, "ours": ours, "reference": reference})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="default", choices=("quick", "default", "full"))
    parser.add_argument("--tour_dir", type=Path, nargs="+", default=None,
                        help="finished tour folder(s) instead of a new run (several: tours of different --parts, "
                             "merged)")
    parser.add_argument("--out", type=Path, default=HERE / "figures" / "tour")
    parser.add_argument("--note", default="one run", help="how the tour ran, for the record (tour.json)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dl1-docs-tour-") as tmp:
        tour_dirs = args.tour_dir or [run_tour(args.budget, Path(tmp))]
        wanted = referenced()
        figures = sorted((f for d in tour_dirs for f in (d / "figures").glob("*.png") if f.name in wanted),
                         key=lambda f: f.name)
        missing = sorted(wanted - {f.name for f in figures})
        if missing:  # a part that could not run here: its page's figure is missing, and mkdocs --strict says so
            print(f"warning: the tour made no {', '.join(missing)}", file=sys.stderr)
        if not figures:
            print(f"error: {' '.join(map(str, tour_dirs))} hold none of the figures the pages show", file=sys.stderr)
            return 1
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True)
        for figure in figures:
            compact_png(figure, args.out / figure.name)
        record = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "cpu": cpu_name(),
                  "budget": args.budget, "note": args.note, "parts": [p for d in tour_dirs for p in parts_of(d)],
                  "figures": [f.name for f in figures]}
        (args.out / "tour.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{len(figures)} figures, {size / 1e6:.1f} MB -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
