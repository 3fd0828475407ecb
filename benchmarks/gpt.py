"""nanoGPT side by side: its own ``train.py`` and ``dl1 run gpt`` on its CPU recipe, at the same time, one thread each.

    python benchmarks/gpt.py                      # nanoGPT from ../shared/peers/nanogpt, 2000 iterations (the recipe)
    python benchmarks/gpt.py --nanogpt DIR        # any nanoGPT checkout (train.py, model.py, configurator.py, ...)
    python benchmarks/gpt.py --max_iters 200      # a short check, not a result (--quick: 100)

1. Data.  The nanoGPT checkout is copied into a temporary folder (the checkout itself is never written to), the text
   (default tiny Shakespeare: ``--txt_file``) is written there as ``data/shakespeare_char/input.txt``, and nanoGPT's
   own ``prepare.py`` runs on it unchanged, with a stand-in ``requests`` module first on its path: prepare.py imports
   ``requests`` only to download ``input.txt``, which is already there (the stand-in raises if it is ever called).
   Its ``train.bin`` / ``val.bin`` must then equal dl1's encoding and 90/10 split of the same file (checked).
2. Runs.  Two processes start together, each limited to ``--threads`` (default 1) threads
   (``OMP_NUM_THREADS`` = ``MKL_NUM_THREADS``, and ``--threads`` for ours): nanoGPT's ``train.py
   config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64
   --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=N --lr_decay_iters=N --dropout=0.0`` (its README's
   CPU recipe) plus ``--always_save_checkpoint=True`` (so that ``ckpt.pt`` holds the weights of its last evaluation,
   iteration N, rather than its best one; training is unchanged) and ``--eval_interval`` 250 as in its config (N when
   250 does not divide N, so that it evaluates at the end), and ``dl1 run gpt --preset nanogpt-cpu --threads 1
   --max_iters N``.
3. Speed.  nanoGPT's ms per iteration is the mean of the ``time`` of its ``iter K: loss X, time Yms`` lines, skipping
   iteration 0 and every evaluation iteration (K a multiple of ``eval_interval``, whose time includes the evaluation);
   the speed-up uses the lines printed while ours was still running (both processes loaded the machine alike), and
   the mean over the whole run is printed too.  Ours is the run's own training time over its iterations (evaluation
   excluded).  CPU time per iteration as well, which a busy machine disturbs far less than wall time: ours from the
   run's own CPU clock, nanoGPT's from its process's CPU seconds (Linux ``/proc``) read as each of those log lines
   arrives.  The floor is the step's matrix products (every linear layer forward and both backward products, and the
   attention products) timed at ``--threads`` threads just before and just after the runs, each product with the
   faster of torch's default matmul and oneDNN (the smaller of the two measurements is kept); ours / floor (in CPU
   time at one thread) says how much of our step is not matrix products.  The floor repeats each product on the same
   operands, which stay in cache; the cold floor (information, no goal) cycles each product through 12 operand sets,
   so that its operands come from memory or the last-level cache as inside a training step.
4. Loss.  nanoGPT's own estimate (mean of 20 random validation batches) at its last evaluation, and the loss of its
   checkpoint on the whole validation split computed by dl1's evaluator (``mean_loss`` over every character, the
   function that gives our run's validation loss).  ``ckpt.pt`` is read with ``torch.load(weights_only=True)`` (nanoGPT
   stores tensors, numbers and strings only) and copied into dl1's GPT: nanoGPT's layers have no biases (they become
   zeros) and its ``lm_head`` is tied to ``wte`` (copied).

Without a nanoGPT checkout ours runs alone and every nanoGPT number is "not measured".  On a machine shared with other
work the timings move with its load: the load average before and after is printed; compare ratios, not times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dl1.bench_env import describe, write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NANOGPT = ROOT.parent / "shared" / "peers" / "nanogpt"
RECIPE = dict(block_size=64, batch_size=12, n_layer=4, n_head=4, n_embd=128)  # nanoGPT's CPU recipe (its README)
EVAL_INTERVAL = 250  # config/train_shakespeare_char.py
GOAL = 1.5
FLOOR_GOAL = 1.4  # ours / the step's matrix-product floor, at 1 thread
NOT_MEASURED = "not measured"
STUB_REQUESTS = ('"""Stand-in for requests: prepare.py imports it only to download input.txt, which is there."""\n\n'
                 'def get(*args, **kwargs):\n    raise RuntimeError("benchmarks/gpt.py: no downloads")\n')


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/gpt.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--nanogpt", default=str(DEFAULT_NANOGPT), help="nanoGPT checkout (default: %(default)s)")
    p.add_argument("--txt_file", default="shakespeare", help="text: a path or 'shakespeare' (shipped with dl1)")
    p.add_argument("--data_dir", default=None, help="folder searched for the named corpus")
    p.add_argument("--max_iters", type=int, default=2000, help="training iterations of both (default: the recipe's)")
    p.add_argument("--threads", type=int, default=1, help="threads of each process (default 1)")
    p.add_argument("--floor_repeats", type=int, default=5, help="timings of each product for the floor (the fastest "
                   "counts; default 5)")
    p.add_argument("--quick", action="store_true", help="100 iterations: a check that it runs, not a result")
    p.add_argument("--out", default="runs/bench/gpt.json", help="JSON output path")
    args = p.parse_args(argv)
    if args.quick:
        args.max_iters = 100
    if not 1 <= args.max_iters <= 100_000 or not 1 <= args.threads <= 256 or not 1 <= args.floor_repeats <= 100:
        p.error("--max_iters must be in 1..100000, --threads in 1..256 and --floor_repeats in 1..100")
    return args


def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUTF8": "1"}


# -- nanoGPT ---------------------------------------------------------------------------------------------------------
def nanogpt_checkout(path: str) -> Path | None:
    folder = Path(path).expanduser()
    needed = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py",
              "data/shakespeare_char/prepare.py")
    return folder if all((folder / f).is_file() for f in needed) else None


def prepare_nanogpt(checkout: Path, text_file: Path, work: Path, corpus: Any) -> Path:
    """A copy of the checkout in ``work`` with its char data prepared by its own prepare.py from ``text_file``."""
    import numpy as np

    copy = work / "nanogpt"
    shutil.copytree(checkout, copy, ignore=shutil.ignore_patterns("out*", "*.bin", "*.pkl", "input.txt",
                                                                     "__pycache__", ".git"))
    data = copy / "data" / "shakespeare_char"
    shutil.copyfile(text_file, data / "input.txt")
    stub = work / "stub"
    stub.mkdir()
    (stub / "requests.py").write_text(STUB_REQUESTS)
    env = {**thread_env(1), "PYTHONPATH": str(stub)}
    proc = subprocess.run([sys.executable, str(data / "prepare.py")], cwd=data, env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f"nanoGPT's prepare.py failed: {proc.stderr.strip().splitlines()[-1:]}")
    for split in ("train", "val"):
        ids = np.fromfile(data / f"{split}.bin", dtype=np.uint16)
        if not np.array_equal(ids, corpus.split(split).numpy()):
            raise RuntimeError(f"nanoGPT's {split}.bin differs from dl1's {split} split of the same text")
    return copy


def nanogpt_eval_interval(max_iters: int) -> int:
    """The recipe's 250, or ``max_iters`` when 250 does not divide it (so that the last evaluation is at the end)."""
    return EVAL_INTERVAL if max_iters % EVAL_INTERVAL == 0 else max_iters


def nanogpt_command(max_iters: int) -> list[str]:
    return [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
            "--eval_iters=20", "--log_interval=1", *(f"--{k}={v}" for k, v in RECIPE.items()),
            f"--max_iters={max_iters}", f"--lr_decay_iters={max_iters}", "--dropout=0.0",
            f"--eval_interval={nanogpt_eval_interval(max_iters)}", "--always_save_checkpoint=True"]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), or None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Reader(threading.Thread):
    """Collects a process's output lines with the time each arrived and the process's CPU seconds then (so the
    pipe never fills)."""

    def __init__(self, proc: subprocess.Popen):
        super().__init__(daemon=True)
        self.proc, self.lines = proc, []

    def run(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.perf_counter(), cpu_seconds(self.proc.pid), line.rstrip("\n")))


def parse_nanogpt_log(lines: list[tuple[float, float | None, str]], eval_interval: int, until: float | None
                      ) -> dict[str, Any]:
    """ms per training iteration (all, and those printed before ``until``), CPU ms per iteration (the process's CPU
    time between consecutive iteration lines) and the last evaluation's losses."""
    times, overlap, cpu, evals = [], [], [], []
    last_cpu = None
    for t, cpu_s, line in lines:
        if line.startswith("iter "):
            k = int(line.split(":")[0].split()[1])
            ms = float(line.split("time ")[1].split("ms")[0])
            if k % eval_interval:  # iteration 0 and evaluation iterations include the evaluation
                times.append(ms)
                if until is None or t <= until:
                    overlap.append(ms)
                if cpu_s is not None and last_cpu is not None:
                    cpu.append(1000 * (cpu_s - last_cpu))
            last_cpu = cpu_s
        elif line.startswith("step ") and "val loss" in line:
            evals.append((int(line.split(":")[0].split()[1]), float(line.split("val loss ")[1])))
    if not times:
        raise RuntimeError("no training iterations in nanoGPT's log")
    return {"ms_per_iter": statistics.fmean(times), "ms_per_iter_overlap": statistics.fmean(overlap or times),
            "iters_timed": len(times), "iters_overlap": len(overlap), "median_ms": statistics.median(times),
            "cpu_ms_per_iter": statistics.fmean(cpu) if cpu else None,
            "val_loss_20_batches": evals[-1][1] if evals else None, "last_eval_iter": evals[-1][0] if evals else None}


def nanogpt_whole_split_loss(ckpt_path: Path, corpus: Any) -> tuple[float, int]:
    """nanoGPT's checkpoint scored by dl1's evaluator on every character of the validation split."""
    import torch

    from dl1.models.gpt import GPT, GPTConfig, mean_loss

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    a = ckpt["model_args"]
    model = GPT(GPTConfig(vocab_size=a["vocab_size"], block_size=a["block_size"], n_layer=a["n_layer"],
                          n_head=a["n_head"], n_embd=a["n_embd"], embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0,
                          activation="gelu"))  # nanoGPT's MLP uses nn.GELU() (exact)
    theirs = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    theirs = {k: v for k, v in theirs.items() if not k.endswith(".attn.bias")}  # its causal-mask buffer, if any
    ours = model.state_dict()
    unexpected = set(theirs) - set(ours)
    missing = [k for k in ours if k not in theirs and not k.endswith(".bias")]
    if unexpected or missing:
        raise RuntimeError(f"nanoGPT checkpoint does not map onto dl1's GPT: unexpected {sorted(unexpected)[:4]}, "
                           f"missing {missing[:4]}")
    with torch.no_grad():
        for k, v in ours.items():
            if k in theirs:
                v.copy_(theirs[k])
            else:  # nanoGPT's layers have no biases (bias=False)
                v.zero_()
    windows = corpus.eval_windows("val", a["block_size"], 32)
    return mean_loss(model, windows, torch.device("cpu")), int(ckpt["iter_num"])


# -- ours -----------------------------------------------------------------------------------------------------------
def ours_command(text_file: Path, max_iters: int, threads: int, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "dl1", "run", "gpt", "--preset", "nanogpt-cpu", "--txt_file", str(text_file),
            "--threads", str(threads), "--max_iters", str(max_iters), "--sample_tokens", "0",
            "--final_sample_tokens", "300", "--run_dir", str(run_dir)]


# -- the matrix-product floor ----------------------------------------------------------------------------------------
def step_products(vocab: int) -> list[tuple[str, int, int, int, int]]:
    """(kind, count, M, K, N) of every matrix product of one training step of the recipe: y = x W^T, then
    dx = dy W and dW = dy^T x for each linear layer; q k^T, p v and their four backward products per head."""
    b, t, d, layers, heads = (RECIPE[k] for k in ("batch_size", "block_size", "n_embd", "n_layer", "n_head"))
    m, hs = b * t, d // heads
    out = []
    for k, n, count in ((d, 3 * d, layers), (d, d, layers), (d, 4 * d, layers), (4 * d, d, layers), (d, vocab, 1)):
        out += [("linear", count, m, k, n), ("linear", count, m, n, k), ("linear", count, n, m, k)]
    # batched over b * heads: s = q k^T and dp = dy v^T; y = p v, dv = p^T dy, dq = ds k, dk = ds^T q
    out += [("attention", 2 * layers, t, hs, t), ("attention", 4 * layers, t, t, hs)]
    return out


COLD_SETS = 12  # operand sets the cold floor cycles through: together larger than a core's L2 cache


def matmul_floor(vocab: int, threads: int, repeats: int = 5) -> dict[str, float]:
    """Milliseconds of the step's products, each timed with torch's default matmul and with oneDNN (the faster).

    Hot (the floor): each product repeated on the same operands, which stay in cache.  Cold: each product over
    ``COLD_SETS`` different operand sets in turn, so that its operands come from memory or the last-level cache, as
    they do inside a training step where other work ran in between."""
    import torch

    from dl1.models.kernels import _onednn_mm, onednn_linear_op

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    batch = RECIPE["batch_size"] * RECIPE["n_head"]
    onednn = onednn_linear_op() is not None

    def best(fns, reps: int = 10) -> tuple[float, float]:
        """The fastest of ``repeats`` timings of ``reps`` calls (cycling through ``fns``): (wall, CPU) s per call."""
        for fn in fns:
            fn()
        runs = []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(reps):
                fns[i % len(fns)]()
            runs.append(((time.perf_counter() - t0) / reps, (time.process_time() - c0) / reps))
        return min(r[0] for r in runs), min(r[1] for r in runs)

    sums = dict.fromkeys(("hot", "hot_cpu", "cold", "cold_cpu", "default", "flops"), 0.0)
    try:
        for kind, count, m, k, n in step_products(vocab):
            if kind == "linear":
                sets = [(torch.randn(m, k), torch.randn(n, k)) for _ in range(COLD_SETS)]
                ways = [lambda a, w: a @ w.t()] + ([_onednn_mm] if onednn else [])
                fl = 2 * m * k * n
            else:
                sets = [(torch.randn(batch, m, k), torch.randn(batch, k, n)) for _ in range(COLD_SETS)]
                ways = [torch.bmm]
                fl = 2 * batch * m * k * n
            hot = [best([lambda a=sets[0][0], w=sets[0][1], f=f: f(a, w)]) for f in ways]
            cold = [best([lambda a=a, w=w, f=f: f(a, w) for a, w in sets], reps=2 * COLD_SETS) for f in ways]
            sums["hot"] += count * min(t[0] for t in hot)
            sums["hot_cpu"] += count * min(t[1] for t in hot)
            sums["cold"] += count * min(t[0] for t in cold)
            sums["cold_cpu"] += count * min(t[1] for t in cold)
            sums["default"] += count * hot[0][0]
            sums["flops"] += count * fl
    finally:
        torch.set_num_threads(before)
    return {"floor_ms": 1000 * sums["hot"], "floor_cpu_ms": 1000 * sums["hot_cpu"],
            "cold_floor_ms": 1000 * sums["cold"], "cold_floor_cpu_ms": 1000 * sums["cold_cpu"],
            "default_matmul_ms": 1000 * sums["default"], "gflop": sums["flops"] / 1e9,
            "gflops_floor": sums["flops"] / sums["hot"] / 1e9, "gflops_default": sums["flops"] / sums["default"] / 1e9}


# -- the benchmark ---------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from dl1.data.text import load_corpus, resolve_text_file

    text_file = resolve_text_file(args.txt_file, args.data_dir)
    corpus = load_corpus(str(text_file), args.data_dir)
    checkout = nanogpt_checkout(args.nanogpt)
    nano_dir = prepare_nanogpt(checkout, text_file, work, corpus) if checkout else None
    load_before = os.getloadavg()
    floors = [matmul_floor(corpus.tokenizer.vocab_size, args.threads, args.floor_repeats)]

    env = thread_env(args.threads)
    nano = reader = None
    if nano_dir:
        nano = subprocess.Popen(nanogpt_command(args.max_iters), cwd=nano_dir, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        reader = Reader(nano)
        reader.start()
    t0 = time.perf_counter()
    ours = subprocess.run(ours_command(text_file, args.max_iters, args.threads, work / "ours"), env=env,
                          capture_output=True, text=True)
    ours_end = time.perf_counter()
    if nano:
        reader.join()  # to the end of its output, before the process is reaped (its CPU clock stays readable)
        nano.wait()
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    if ours.returncode:
        raise RuntimeError(f"dl1 run gpt failed: {(ours.stderr.strip().splitlines() or ['?'])[-1]}")
    floors.append(matmul_floor(corpus.tokenizer.vocab_size, args.threads, args.floor_repeats))
    floor = min(floors, key=lambda f: f["floor_ms"])

    s = json.loads((work / "ours" / "summary.json").read_text())
    tokens = RECIPE["batch_size"] * RECIPE["block_size"]
    result: dict[str, Any] = {
        "threads": args.threads, "max_iters": args.max_iters, "cpu_count": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
        "wall_s": round(wall, 1), "floor": {k: round(v, 3) for k, v in floor.items()},
        "ours": {"ms_per_iter": s["speed"]["ms_per_iter"], "cpu_ms_per_iter":
                 round(1000 * tokens / s["speed"]["train_tokens_per_cpu_s"], 2),
                 "val_loss": s["final"]["val_loss"], "train_loss": s["final"]["train_loss"], "iters": s["iters"],
                 "train_s": s["train_time_s"], "sample": s.get("sample", "")},
        "nanogpt": {"checkout": str(checkout) if checkout else None, "ms_per_iter": None},
    }
    if nano:
        log = parse_nanogpt_log(reader.lines, nanogpt_eval_interval(args.max_iters), ours_end)
        if nano.returncode:
            raise RuntimeError(f"nanoGPT's train.py failed: {[line for *_, line in reader.lines[-3:]]}")
        ckpt = nano_dir / "out-shakespeare-char" / "ckpt.pt"
        whole, ckpt_iter = nanogpt_whole_split_loss(ckpt, corpus)
        result["nanogpt"].update(log, val_loss_whole_split=whole, checkpoint_iter=ckpt_iter)
    return result


def rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows ``dl1 bench`` tabulates; a nanoGPT number that was not measured is None ("not measured")."""
    o, n, f, t = r["ours"], r["nanogpt"], r["floor"], r["threads"]
    measured = n["ms_per_iter"] is not None
    nano_ms, nano_cpu = (n["ms_per_iter_overlap"], n.get("cpu_ms_per_iter")) if measured else (None, None)
    nano_loss = n["val_loss_whole_split"] if measured else None
    floor_case, ours_vs_floor, floor = (("training CPU ms/iter / matmul floor (CPU)", o["cpu_ms_per_iter"],
                                         f["floor_cpu_ms"]) if t == 1 else
                                        ("training ms/iter / matmul floor", o["ms_per_iter"], f["floor_ms"]))
    cold_case, cold = (("training CPU ms/iter / cold matmul floor (CPU)", f["cold_floor_cpu_ms"]) if t == 1 else
                       ("training ms/iter / cold matmul floor", f["cold_floor_ms"]))
    return [
        {"case": "training ms/iter: nanoGPT / ours, same time", "threads": t, "ours": o["ms_per_iter"],
         "reference": nano_ms, "ratio": nano_ms / o["ms_per_iter"] if nano_ms else None, "goal": f">= {GOAL}"},
        {"case": "training CPU ms/iter: nanoGPT / ours", "threads": t, "ours": o["cpu_ms_per_iter"],
         "reference": nano_cpu, "ratio": nano_cpu / o["cpu_ms_per_iter"] if nano_cpu else None,
         "goal": f">= {GOAL}"},
        {"case": "val loss (whole split): ours / nanoGPT", "threads": t, "ours": o["val_loss"],
         "reference": nano_loss, "ratio": o["val_loss"] / nano_loss if nano_loss else None, "goal": "<= 1"},
        {"case": floor_case, "threads": t, "ours": ours_vs_floor, "floor": floor, "ratio": ours_vs_floor / floor,
         "goal": f"<= {FLOOR_GOAL}" if t == 1 else None},
        {"case": cold_case, "threads": t, "ours": ours_vs_floor, "floor": cold, "ratio": ours_vs_floor / cold,
         "goal": None},  # information: what the products cost with their operands out of cache, as in a step
    ]


def print_table(r: dict[str, Any]) -> None:
    o, n, f = r["ours"], r["nanogpt"], r["floor"]
    measured = n["ms_per_iter"] is not None

    def num(v: Any, fmt: str, width: int, missing: str = "-") -> str:
        return format(v, f"{width}{fmt}") if isinstance(v, int | float) else f"{missing:>{width}}"

    print(f"\nnanoGPT's CPU recipe (4 layers x 4 heads x width 128, block 64, batch 12, dropout 0), {r['max_iters']} "
          f"iterations, {r['threads']} thread(s) each, both runs at the same time; load average "
          f"{r['load_before'][0]:.2f} before, {r['load_after'][0]:.2f} after, on {r['cpu_count']} CPUs")
    head = (f"{'':20} | {'ms/iter':>7} | {'CPU ms/iter':>11} | {'val loss, 20 batches':>20} | "
            f"{'val loss, whole split':>21} | {'threads':>7}")
    print(head)
    print("-" * len(head))
    print(f"{'dl1 run gpt (ours)':20} | {o['ms_per_iter']:7.1f} | {num(o['cpu_ms_per_iter'], '.1f', 11)} | "
          f"{'-':>20} | {o['val_loss']:21.4f} | {r['threads']:>7}")
    if not measured:
        print(f"{'nanoGPT train.py':20} | {NOT_MEASURED} (no nanoGPT checkout: --nanogpt DIR)")
    else:
        print(f"{'nanoGPT train.py':20} | {n['ms_per_iter_overlap']:7.1f} | {num(n['cpu_ms_per_iter'], '.1f', 11)} | "
              f"{num(n['val_loss_20_batches'], '.4f', 20)} | {n['val_loss_whole_split']:21.4f} | {r['threads']:>7}")
        for row in rows(r)[:2]:
            print(f"{row['case']}: {num(row['ratio'], '.2f', 0, NOT_MEASURED)} (goal {row['goal']})")
        print(f"(nanoGPT's ms/iter: its {n['iters_overlap']} iterations printed while ours ran; over its whole run "
              f"{n['ms_per_iter']:.1f}; its checkpoint: iteration {n['checkpoint_iter']})")
    floor, cold = rows(r)[-2:]
    print(f"{floor['case']}: {floor['ratio']:.2f} (goal {floor['goal'] or 'none above 1 thread'}; floor: the "
          f"step's {f['gflop']:.2f} GFLOP of matrix products in "
          f"{f['floor_ms']:.1f} ms, {f['floor_cpu_ms']:.1f} CPU ms, each with the faster of torch's default matmul "
          f"and oneDNN, operands in cache; torch's default alone {f['default_matmul_ms']:.1f} ms)")
    print(f"{cold['case']}: {cold['ratio']:.2f} (no goal: the same products with their operands out of cache, "
          f"cycling through {COLD_SETS} operand sets as a step does, {f['cold_floor_ms']:.1f} ms, "
          f"{f['cold_floor_cpu_ms']:.1f} CPU ms)")


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    from dl1.errors import DL1Error

    try:
        with tempfile.TemporaryDirectory(prefix="dl1-bench-gpt-") as tmp:
            result = run(args, Path(tmp))
    except (DL1Error, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_table(result)
    print(f"\nsample (ours, best checkpoint):\n{result['ours']['sample'][:300]}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"benchmark": "gpt", "recipe": "nanogpt-cpu", **result, "rows": rows(result)})
    print(describe())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
