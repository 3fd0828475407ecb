"""Data parallel on this machine: one process against ``torchrun`` with N ranks, the same global batch, real data.

    python benchmarks/ddp.py --experiment vae --flags "--dataset fashion-mnist --epochs 1"   # the default
    python benchmarks/ddp.py --experiment mlp-pytorch --flags "--dataset fashion-mnist --epochs 5"
    python benchmarks/ddp.py --quick        # the smoke VAE: a check that it runs, not a measurement

Three runs of ``dl1 run EXPERIMENT FLAGS --device cpu``, one after the other on a quiet machine:

1. one process at ``--threads`` threads (the baseline);
2. one process at ``N x --threads`` threads (the same cores, used by one process's intra-op threads);
3. ``torchrun --standalone --nproc_per_node N``, each rank at ``--threads`` threads (gloo).

Each run's training time and steps come from its own run folder (``summary.json``: ``train_time_s``, the engine's
timing of the training batches, no start-up, no evaluation).  The table gives steps/s, the speed-up over the baseline
and the run's result metric: the data-parallel run takes the optimisation steps the single process takes (its ranks'
batches together are the single process's batches), so its metric equals the baseline's up to float summation order.
The JSON rows (for ``dl1 bench ddp``): steps/s of each case over the baseline's, and the data-parallel run's metric
over the baseline's (goal 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from dl1.bench_env import describe, write_json

METRICS = {  # experiment -> (label, path in summary.json)
    "mlp-pytorch": ("test accuracy", ("test_accuracy",)),
    "vae": ("test bpd", ("test_bpd",)),
    "aae": ("test recon MSE", ("test", "recon_loss")),
    "gpt": ("final val loss", ("final", "val_loss")),
    "resnet-transfer": ("test accuracy", ("test", "acc")),
    "clip-prompt": ("test top-1", ("results", "test", "top1")),
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/ddp.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="vae", choices=sorted(METRICS), help="experiment (default: %(default)s)")
    p.add_argument("--flags", default="--dataset fashion-mnist --epochs 1",
                   help="flags of dl1 run, one string (default: %(default)s)")
    p.add_argument("--nproc", type=int, default=2, help="ranks of the torchrun run (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="threads of each process (default: %(default)s)")
    p.add_argument("--out", default="runs/bench/ddp.json", help="JSON output path")
    p.add_argument("--quick", action="store_true", help="the smoke VAE instead: a check that it runs, not a result")
    args = p.parse_args(argv)
    if args.quick:
        args.experiment, args.flags = "vae", "--smoke"
    if not 2 <= args.nproc <= 64 or not 1 <= args.threads <= 256:
        p.error("--nproc must be in 2..64 and --threads in 1..256")
    return args


def run_case(name: str, command: list[str], threads: int, run_dir: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "DL1_PROGRESS": "0"}
    print(f"[{name}] {shlex.join(command)}", flush=True)
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads((run_dir / "summary.json").read_text())


def metric(summary: dict, path: tuple[str, ...]) -> float:
    value = summary
    for key in path:
        value = value[key]
    return float(value)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    flags = shlex.split(args.flags) + ["--device", "cpu"]
    label, path = METRICS[args.experiment]
    n, t = args.nproc, args.threads
    rows = []
    with tempfile.TemporaryDirectory(prefix="dl1-ddp-") as work:
        work = Path(work)
        cases = [("1 process", 1, t, []), (f"1 process, {n * t} threads", 1, n * t, []),
                 (f"torchrun {n} ranks", n, t, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                "--nproc_per_node", str(n), "-m"])]
        for name, ranks, threads, launcher in cases:
            run_dir = work / f"case{len(rows)}"
            head = launcher or [sys.executable, "-m"]
            summary = run_case(name, [*head, "dl1", "run", args.experiment, *flags, "--run_dir", str(run_dir)],
                               threads, run_dir)
            steps, seconds = summary["steps"], summary["train_time_s"]
            rows.append({"case": name, "ranks": ranks, "threads_each": threads, "steps": steps,
                         "train_s": seconds, "steps_per_s": steps / seconds, label: metric(summary, path)})
    base, ddp = rows[0], rows[-1]
    for r in rows:
        r["speedup"] = r["steps_per_s"] / base["steps_per_s"]
    ratios = [{"case": f"{r['case']}: steps/s / 1 process", "threads": f"{r['threads_each']} each",
               "ours": r["steps_per_s"], "reference": base["steps_per_s"], "ratio": r["speedup"], "goal": None}
              for r in rows[1:]]
    ratios.append({"case": f"{label}: torchrun {n} ranks / 1 process", "threads": f"{t} each", "ours": ddp[label],
                   "reference": base[label], "ratio": ddp[label] / base[label], "goal": "= 1"})
    print(f"\n{args.experiment} {args.flags} (cpu_count {os.cpu_count()}); global batch the same in every case")
    print(f"{'case':<26}{'ranks':>6}{'thr':>5}{'steps':>7}{'train s':>9}{'steps/s':>9}{'speed-up':>9}  {label}")
    for r in rows:
        print(f"{r['case']:<26}{r['ranks']:>6}{r['threads_each']:>5}{r['steps']:>7}{r['train_s']:>9.1f}"
              f"{r['steps_per_s']:>9.2f}{r['speedup']:>8.2f}x  {r[label]:.6g}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"experiment": args.experiment, "flags": args.flags, "cpu_count": os.cpu_count(),
                     "runs": rows, "ratios": ratios})
    print(describe())
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
