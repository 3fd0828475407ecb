"""Character-level GPT throughput and loss: nanoGPT's CPU recipe on tiny Shakespeare, at several thread counts.

    python benchmarks/gpt.py                      # 2000 iterations at 1 and 2 threads (~3 min each on a quiet CPU)
    python benchmarks/gpt.py --threads 1 --iters 300
    python benchmarks/gpt.py --quick              # 100 iterations at 1 thread: a check that it runs, not a result

For each thread count it runs ``dl1 run gpt --preset nanogpt-cpu`` (4 layers, 4 heads, width 128, block 64, batch 12,
dropout 0, AdamW lr 1e-3 -> 1e-4 cosine, warm-up 100, weight decay 0.1, clip 1) and reports training tokens per second
(training steps only, evaluation excluded; also per CPU-second, which estimates a quiet machine when the run had one
thread on a busy one) and the validation loss on the whole validation split.  Then it times our training step against
the course template's path (explicit masked-softmax attention, tanh GELU, per-tensor AdamW) on the same model in
alternating rounds of 10 steps (both see the same load), and prints nanoGPT's number on these machines as the
reference: 92-99 ms per iteration of 768 tokens at 1 thread (~8,000 tokens/s), validation loss 1.90 after 2000
iterations.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NANOGPT = {"threads": 1, "tokens_per_s": 768 / 0.0955, "ms_per_iter": 95.5, "val_loss": 1.90, "iters": 2000}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/gpt.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default: 1 2)")
    p.add_argument("--iters", type=int, default=2000, help="training iterations per run (default: 2000, the recipe)")
    p.add_argument("--baseline_iters", type=int, default=200,
                   help="iterations of each path in the alternating ours-vs-template step timing")
    p.add_argument("--txt_file", default="shakespeare",
                   help="tiny Shakespeare: a path or 'shakespeare' (data dir, cache, or download)")
    p.add_argument("--data_dir", default=None, help="folder searched for the named corpus")
    p.add_argument("--quick", action="store_true", help="100 iterations at 1 thread (a check, not a result)")
    p.add_argument("--out", default="runs/bench/gpt.json", help="JSON output path")
    args = p.parse_args(argv)
    if args.quick:
        args.threads, args.iters, args.baseline_iters = [1], 100, 40
    return args


def run_ours(txt_file: str, data_dir: str | None, threads: int, iters: int, root: Path) -> dict[str, Any]:
    """``dl1 run gpt --preset nanogpt-cpu`` at ``threads`` threads; the run's own timing of the training steps."""
    from dl1.experiments import execute

    flags = ["--preset", "nanogpt-cpu", "--txt_file", txt_file, "--threads", str(threads), "--max_iters", str(iters),
             "--sample_tokens", "0", "--final_sample_tokens", "300"]
    if data_dir:
        flags += ["--data_dir", data_dir]
    t0 = time.perf_counter()
    s = execute("gpt", flags, out_dir=root, quiet=True)
    return {"threads": threads, "iters": iters, "tokens_per_s": s["speed"]["train_tokens_per_s"],
            "ms_per_iter": s["speed"]["ms_per_iter"],
            "tokens_per_cpu_s": s["speed"]["train_tokens_per_cpu_s"], "val_loss": s["final"]["val_loss"],
            "train_loss": s["final"]["train_loss"], "train_s": s["train_time_s"],
            "wall_s": round(time.perf_counter() - t0, 1), "sample": s["sample"], "run_dir": s["run_dir"]}


def make_step(corpus, fused: bool, activation: str, foreach: bool):
    """One training step of the recipe (batch 12, block 64): ours (fused, foreach) or the template's path."""
    import torch

    from dl1.models.gpt import GPT, GPTConfig
    from dl1.train import warmup_cosine

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=128,
                          embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0, fused_attention=fused,
                          activation=activation))
    decay, no_decay = model.decay_groups()
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [params[n] for n in decay], "weight_decay": 0.1},
                             {"params": [params[n] for n in no_decay], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99), foreach=foreach)
    sched = warmup_cosine(opt, 100, 2000, min_factor=0.1)
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        x, y = corpus.get_batch("train", 12, 64, generator=g)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()

    return step


def compare_steps(txt_file: str, data_dir: str | None, threads: int, iters: int) -> dict[str, Any]:
    """Ours vs the course template's path (explicit attention, tanh GELU, per-tensor AdamW), timed in alternating
    rounds of 10 steps so that both see the same machine load; medians of the rounds."""
    import statistics

    import torch

    from dl1.data.text import load_corpus

    torch.set_num_threads(threads)
    corpus = load_corpus(txt_file, data_dir)
    steps = {"ours": make_step(corpus, True, "gelu", True), "template": make_step(corpus, False, "gelu_tanh", False)}
    times: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    for step in steps.values():
        for _ in range(5):
            step()
    for _ in range(max(1, iters // 10)):
        for name, step in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(10):
                step()
            times[name].append((time.perf_counter() - t0) / 10)
            cpu[name].append((time.process_time() - c0) / 10)
    out = {}
    for name, ts in times.items():
        per_iter = statistics.median(ts)
        out[name] = {"ms_per_iter": round(per_iter * 1000, 2), "tokens_per_s": round(768 / per_iter, 1),
                     "cpu_ms_per_iter": round(statistics.median(cpu[name]) * 1000, 2)}
    return {"threads": threads, "rounds": len(times["ours"]), **out}


def ratio_row(tokens_per_s: float) -> dict:
    """The row ``dl1 bench`` tabulates: our training tokens/s over nanoGPT's at 1 thread on these machines."""
    return {"case": "training tokens/s vs nanoGPT (1 thread)", "ours": tokens_per_s,
            "reference": NANOGPT["tokens_per_s"], "ratio": tokens_per_s / NANOGPT["tokens_per_s"], "goal": ">= 1"}


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    import torch

    from dl1.errors import DL1Error

    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for t in args.threads:
                ours = run_ours(args.txt_file, args.data_dir, t, args.iters, Path(tmp))
                ab = compare_steps(args.txt_file, args.data_dir, t, args.baseline_iters)
                rows.append({"threads": t, "run": {k: v for k, v in ours.items() if k != "run_dir"}, "steps": ab,
                             **ratio_row(ours["tokens_per_s"])})
                print(f"threads {t}: run {ours['tokens_per_s']:.0f} tokens/s, val loss {ours['val_loss']:.4f}; "
                      f"steps: ours {ab['ours']['ms_per_iter']} ms, template {ab['template']['ms_per_iter']} ms",
                      flush=True)
    except DL1Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_table(rows, args.iters)
    print(f"\nsample ({rows[0]['threads']}-thread run, best checkpoint):\n{rows[0]['run']['sample'][:300]}")
    result = {"benchmark": "gpt", "recipe": "nanogpt-cpu", "iters": args.iters, "torch": torch.__version__,
              "cpu_count": __import__("os").cpu_count(), "nanogpt_reference": NANOGPT, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def print_table(rows: list[dict[str, Any]], iters: int) -> None:
    head = (f"{'threads':>7} | {'run tok/s':>9} | {'run tok/CPU-s':>13} | {'val loss':>8} | {'ours ms/it':>10} | "
            f"{'template ms/it':>14} | {'speed-up':>8} | {'CPU speed-up':>12} | {'nanoGPT tok/s':>13} | "
            f"{'run/nanoGPT':>11}")
    print(f"\nnanoGPT CPU recipe, {iters} iterations; run = dl1 run gpt --preset nanogpt-cpu (training steps only, "
          "validation loss on the whole 10 % split); ms/it = alternating step timing, medians; CPU = per CPU-second "
          "(with 1 thread on a busy machine, an estimate of a quiet one)")
    print(head)
    print("-" * len(head))
    for r in rows:
        o, s = r["run"], r["steps"]
        ref = NANOGPT["tokens_per_s"] if r["threads"] == NANOGPT["threads"] else None
        ref_s = f"{ref:13.0f}" if ref else f"{'-':>13}"
        ratio = f"{o['tokens_per_s'] / ref:11.2f}" if ref else f"{'-':>11}"
        speedup = s["template"]["ms_per_iter"] / s["ours"]["ms_per_iter"]
        cpu_speedup = s["template"]["cpu_ms_per_iter"] / s["ours"]["cpu_ms_per_iter"]
        print(f"{r['threads']:>7} | {o['tokens_per_s']:9.0f} | {o['tokens_per_cpu_s']:13.0f} | {o['val_loss']:8.4f} | "
              f"{s['ours']['ms_per_iter']:10.1f} | {s['template']['ms_per_iter']:14.1f} | {speedup:8.2f} | "
              f"{cpu_speedup:12.2f} | {ref_s} | "
              f"{ratio}")
    print(f"nanoGPT reference (1 thread, these machines): {NANOGPT['ms_per_iter']} ms/iter (92-99), "
          f"val loss {NANOGPT['val_loss']} after {NANOGPT['iters']} iterations"
          + ("" if iters == NANOGPT["iters"] else f"; this run did {iters} iterations, so its loss is not comparable"))


if __name__ == "__main__":
    raise SystemExit(main())
