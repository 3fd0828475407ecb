"""Character-level GPT throughput and loss: nanoGPT's CPU recipe on tiny Shakespeare, at several thread counts.

    python benchmarks/gpt.py                      # 2000 iterations at 1 and 2 threads (~3 min each on a quiet CPU)
    python benchmarks/gpt.py --threads 1 --iters 300
    python benchmarks/gpt.py --quick              # 100 iterations at 1 thread: a check that it runs, not a result

For each thread count it runs ``dl1 run gpt --preset nanogpt-cpu`` (4 layers, 4 heads, width 128, block 64, batch 12,
dropout 0, AdamW lr 1e-3 -> 1e-4 cosine, warm-up 100, weight decay 0.1, clip 1) and reports training tokens per second
(training steps only, evaluation excluded) and the validation loss on the whole validation split.  In the same process
it times the course template's path (explicit masked-softmax attention, tanh GELU, per-tensor AdamW) on the same model
as the baseline, and prints nanoGPT's number on these machines as the reference: 92-99 ms per iteration of 768 tokens
at 1 thread (~8,000 tokens/s), validation loss 1.90 after 2000 iterations.
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
    p.add_argument("--baseline_iters", type=int, default=100, help="iterations timed for the template path")
    p.add_argument("--txt_file", default="shakespeare",
                   help="tiny Shakespeare: a path or 'shakespeare' (data dir, cache, or download)")
    p.add_argument("--data_dir", default=None, help="folder searched for the named corpus")
    p.add_argument("--quick", action="store_true", help="100 iterations at 1 thread (a check, not a result)")
    p.add_argument("--out", default="runs/bench/gpt.json", help="JSON output path")
    args = p.parse_args(argv)
    if args.quick:
        args.threads, args.iters, args.baseline_iters = [1], 100, 30
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
            "ms_per_iter": s["speed"]["ms_per_iter"], "val_loss": s["final"]["val_loss"],
            "train_loss": s["final"]["train_loss"], "train_s": s["train_time_s"],
            "wall_s": round(time.perf_counter() - t0, 1), "sample": s["sample"], "run_dir": s["run_dir"]}


def time_template(txt_file: str, data_dir: str | None, threads: int, iters: int) -> dict[str, Any]:
    """The course template's path on the same recipe: explicit attention, tanh GELU, per-tensor AdamW."""
    import torch

    from dl1.data.text import load_corpus
    from dl1.models.gpt import GPT, GPTConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    corpus = load_corpus(txt_file, data_dir)
    model = GPT(GPTConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=128,
                          embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0, fused_attention=False,
                          activation="gelu_tanh"))
    decay, no_decay = model.decay_groups()
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [params[n] for n in decay], "weight_decay": 0.1},
                             {"params": [params[n] for n in no_decay], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99), foreach=False)
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        x, y = corpus.get_batch("train", 12, 64, generator=g)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    per_iter = (time.perf_counter() - t0) / iters
    return {"threads": threads, "iters": iters, "tokens_per_s": round(768 / per_iter, 1),
            "ms_per_iter": round(per_iter * 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    import torch

    from dl1.errors import DL1Error

    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for t in args.threads:
                ours = run_ours(args.txt_file, args.data_dir, t, args.iters, Path(tmp))
                base = time_template(args.txt_file, args.data_dir, t, args.baseline_iters)
                rows.append({"threads": t, "ours": {k: v for k, v in ours.items() if k != "run_dir"},
                             "template": base})
                print(f"threads {t}: {ours['tokens_per_s']:.0f} tokens/s, val loss {ours['val_loss']:.4f}",
                      flush=True)
    except DL1Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_table(rows, args.iters)
    print(f"\nsample (1 thread run, best checkpoint):\n{rows[0]['ours']['sample'][:300]}")
    result = {"benchmark": "gpt", "recipe": "nanogpt-cpu", "iters": args.iters, "torch": torch.__version__,
              "cpu_count": __import__("os").cpu_count(), "nanogpt_reference": NANOGPT, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def print_table(rows: list[dict[str, Any]], iters: int) -> None:
    head = (f"{'threads':>7} | {'ours tok/s':>10} | {'ms/iter':>7} | {'val loss':>8} | {'template tok/s':>14} | "
            f"{'ours/template':>13} | {'nanoGPT tok/s':>13} | {'ours/nanoGPT':>12}")
    print(f"\nnanoGPT CPU recipe, {iters} iterations (validation loss on the whole 10 % split)")
    print(head)
    print("-" * len(head))
    for r in rows:
        o, b = r["ours"], r["template"]
        ref = NANOGPT["tokens_per_s"] if r["threads"] == NANOGPT["threads"] else None
        ref_s = f"{ref:13.0f}" if ref else f"{'-':>13}"
        ratio = f"{o['tokens_per_s'] / ref:12.2f}" if ref else f"{'-':>12}"
        print(f"{r['threads']:>7} | {o['tokens_per_s']:10.0f} | {o['ms_per_iter']:7.1f} | {o['val_loss']:8.4f} | "
              f"{b['tokens_per_s']:14.0f} | {o['tokens_per_s'] / b['tokens_per_s']:13.2f} | {ref_s} | {ratio}")
    print(f"nanoGPT reference (1 thread, these machines): {NANOGPT['ms_per_iter']} ms/iter (92-99), "
          f"val loss {NANOGPT['val_loss']} after {NANOGPT['iters']} iterations"
          + ("" if iters == NANOGPT["iters"] else f"; this run did {iters} iterations, so its loss is not comparable"))


if __name__ == "__main__":
    raise SystemExit(main())
