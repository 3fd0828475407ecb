"""One check of every training experiment on the GPU: smoke and short real runs, bf16 and fp16, torchrun on all GPUs.

    python scripts/gpu_check.py --data_dir data/gpu                   # CUDA: < 8 min, table in runs/gpu_check/
    python scripts/gpu_check.py --device cpu --dry_run --out /tmp/gc  # the same plan on a CPU (what the tests run)

Rows (each one subprocess, ``python -m dl1 run ...`` or ``python -m torch.distributed.run ... -m dl1 run ...``, with
its own timeout; a failing row is reported in the table and the others still run):

* the smoke run (``--smoke``) of mlp-pytorch, resnet-transfer, clip-prompt, vae, aae and gpt in every precision;
* a short real run in every precision: Fashion-MNIST for one epoch (mlp-pytorch, vae, aae; ``--data_dir`` holds
  ``FashionMNIST/raw/``), tiny Shakespeare for 300 iterations of nanoGPT's GPU recipe (gpt; ``--txt_file``),
  CIFAR-100 for one epoch (resnet-transfer, clip-prompt: they also need the ResNet-18 ImageNet weights in torch's hub
  cache and CLIP ViT-B/32's in open_clip's cache; a row whose files are missing says "skipped: ..." and is no failure);
* the real runs of gpt and vae again under ``torchrun --nproc_per_node N`` over all visible GPUs (``--batch_size`` /
  ``--train_batch_size`` is the global batch: rounded up to a multiple of N).

Before the rows, two equality checks run on the device: the GPT's fused and explicit attention paths give the same
logits and gradients (and the model is causal), and a small random GPT-2 (transformers) gives the same logits as dl1's
copy of it.

Steps/s is the run folder's own number: optimiser steps over ``train_time_s`` (training batches only: no start-up,
data loading or evaluation), from ``summary.json`` (else from the last ``train`` record of ``metrics.jsonl``).  The
final loss is the last logged training loss (the last epoch's mean; gpt: the mean of its last ``--log_interval``
iterations; vae: bits per dimension; aae: the autoencoder's loss).  The table goes to stdout and, as JSON and
Markdown, to ``--out``.  ``--budget_s`` bounds the whole check: a row not started within it says "not run: budget".
Exit status 0 when every row and check passed (or was skipped for missing files, or needs CUDA on a CPU), else 1.

``--dry_run``: the same table with every row's command printed; the smoke rows run (on a CPU: fp32 and bf16; fp16
rows say "needs CUDA"), the gpt smoke also under torchrun with two gloo ranks; the real rows and the equality checks
are only planned (their inputs are checked: a missing Fashion-MNIST or text file fails the row).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("mlp-pytorch", "resnet-transfer", "clip-prompt", "vae", "aae", "gpt")
TORCHRUN = ("gpt", "vae")         # real runs repeated under torchrun over all visible GPUs
TORCHRUN_SMOKE = ("gpt",)         # dry run: smoke under torchrun (two gloo ranks on a CPU)
FASHION = ("mlp-pytorch", "vae", "aae")
BATCH_FLAG = {"gpt": "train_batch_size"}  # the global-batch flag (else batch_size)
LOSS_KEY = {"vae": "bpd", "aae": "ae_loss"}  # the training objective in the train records (else loss)
GPT_ITERS = 300
PASSED = ("ok", "planned", "needs CUDA", "skipped")
TOLERANCES = {"logits_max_abs_diff": 1e-4, "grads_max_abs_diff": 1e-4, "causality_max_abs_diff": 1e-5,
              "hf_logits_max_abs_diff": 1e-4}


@dataclass
class Row:
    experiment: str
    data: str            # "smoke", or the real data and its length
    precision: str
    ranks: int
    launch: str          # python or torchrun
    command: list[str] = field(default_factory=list)
    status: str = "pending"  # ok, failed, skipped, needs CUDA, planned, not run: budget
    error: str = ""      # first line of the failure, or what a skipped row misses
    steps: int | None = None
    train_time_s: float | None = None
    steps_per_s: float | None = None
    final_loss: float | None = None
    loss_key: str = ""
    wall_s: float | None = None  # the subprocess's wall time, start-up included
    run_dir: str = ""

    @property
    def name(self) -> str:
        kind = "smoke" if self.data == "smoke" else "real"
        return f"{self.experiment}-{kind}-{self.precision}-{self.launch}{self.ranks}"

    @property
    def failed(self) -> bool:
        return self.status not in PASSED


# -- the plan ----------------------------------------------------------------------------------------------------------
def real_flags(experiment: str, args: argparse.Namespace) -> tuple[str, list[str]]:
    """(what the real row trains on, its flags)."""
    data = ["--data_dir", str(args.data_dir)]
    if experiment in FASHION:
        return "fashion-mnist, 1 epoch", ["--dataset", "fashion-mnist", *data, "--epochs", "1"]
    if experiment == "gpt":
        return (f"{Path(args.txt_file).name}, {GPT_ITERS} iters", [
            "--txt_file", str(args.txt_file), "--preset", "nanogpt-gpu", "--max_iters", str(GPT_ITERS),
            "--eval_interval", str(GPT_ITERS), "--sample_tokens", "0", "--final_sample_tokens", "0"])
    if experiment == "resnet-transfer":
        return "cifar100, 1 epoch", ["--dataset", "cifar100", *data, "--epochs", "1"]
    if experiment == "clip-prompt":
        return "cifar100, 1 epoch of 50 batches", ["--dataset", "cifar100", *data, "--epochs", "1",
                                                   "--max_batches", "50"]
    raise ValueError(experiment)


def missing_inputs(experiment: str, args: argparse.Namespace, cache: dict[str, str | None]) -> tuple[str, str]:
    """("failed" or "skipped", what is missing) for a real row whose files are not there, else ("", "")."""

    def dataset(name: str) -> str | None:  # None when present, else the one-line message
        if name not in cache:
            from dl1.data import vision
            from dl1.errors import DL1Error

            try:
                vision.prepare(name, args.data_dir, download=False)
                cache[name] = None
            except DL1Error as exc:
                cache[name] = str(exc).splitlines()[0]
        return cache[name]

    if experiment in FASHION:
        problem = dataset("fashion-mnist")
        return ("failed", problem) if problem else ("", "")
    if experiment == "gpt":
        if not Path(args.txt_file).is_file():
            return "failed", f"--txt_file {args.txt_file}: no such file (copy tiny_shakespeare.txt there)"
        return "", ""
    missing = []
    if experiment == "resnet-transfer":
        from dl1.hub.torchvision import weights_file

        if not weights_file().is_file():
            missing.append(f"ResNet-18 ImageNet weights ({weights_file()})")
    else:
        from dl1.hub.clip import cached_file, open_clip_name, pretrained_cfg

        if cached_file(pretrained_cfg(open_clip_name("ViT-B/32"), "openai"), None) is None:
            missing.append("CLIP ViT-B/32 openai weights (open_clip's cache)")
    if dataset("cifar100"):
        missing.append(f"CIFAR-100 ({Path(args.data_dir) / 'cifar-100-python'})")
    return ("skipped", "missing " + ", ".join(missing)) if missing else ("", "")


def checked_flags(experiment: str, flags: list[str], smoke: bool, ranks: int) -> list[str]:
    """``flags`` validated by the experiment's own Config (a bad flag fails the row before it starts), with the
    global batch rounded up to a multiple of ``ranks`` under torchrun."""
    from dl1.experiments import make_config

    if ranks > 1:
        flag = BATCH_FLAG.get(experiment, "batch_size")
        batch = getattr(make_config(experiment, flags, smoke=smoke), flag)
        flags = [*flags, f"--{flag}", str(-(-batch // ranks) * ranks)]
    make_config(experiment, flags, smoke=smoke)
    return flags


def plan(args: argparse.Namespace, nproc: int, session: Path) -> list[Row]:
    """Every row, in the order they run: smoke, real, then torchrun."""
    from dl1.errors import DL1Error

    specs = [(e, "smoke", p, 1, "python") for e in args.experiments for p in args.precisions]
    if args.dry_run:
        specs += [(e, "smoke", p, nproc, "torchrun") for e in TORCHRUN_SMOKE if e in args.experiments
                  for p in args.precisions]
    specs += [(e, "real", p, 1, "python") for e in args.experiments for p in args.precisions]
    specs += [(e, "real", p, nproc, "torchrun") for e in TORCHRUN if e in args.experiments for p in args.precisions]
    rows, cache = [], {}
    for experiment, kind, precision, ranks, launch in specs:
        smoke = kind == "smoke"
        data, flags = ("smoke", []) if smoke else real_flags(experiment, args)
        row = Row(experiment, data, precision, ranks, launch)
        row.run_dir = str(session / row.name)
        device = "cuda" if launch == "torchrun" and args.device.startswith("cuda") else args.device  # a GPU a rank
        flags += ["--device", device, "--precision", precision]
        try:
            flags = checked_flags(experiment, flags, smoke, ranks)
            status, why = ("", "") if smoke else missing_inputs(experiment, args, cache)
            if status:
                row.status, row.error = status, why
        except DL1Error as exc:
            row.status, row.error = "failed", str(exc).splitlines()[0]
        start = [sys.executable, "-m", "dl1", "run", experiment]
        if launch == "torchrun":
            start = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
                     *start[1:]]
        row.command = [*start, *(["--smoke"] if smoke else []), *flags, "--run_dir", row.run_dir]
        if row.status == "pending" and precision == "fp16" and not args.device.startswith("cuda"):
            row.status = "needs CUDA"
        if row.status == "pending" and args.dry_run and not smoke:
            row.status = "planned"
        rows.append(row)
    return rows


# -- running a row --------------------------------------------------------------------------------------------------
def child_env(device: str = "cuda") -> dict[str, str]:
    """The environment of every row: this checkout's ``src`` first on the path, no progress bars, no display; on a
    CPU one thread per process (smoke-sized work: more threads only wait on each other)."""
    env = dict(os.environ)
    if device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    env["DL1_PROGRESS"] = "0"
    env.setdefault("MPLBACKEND", "Agg")
    return env


def error_line(stderr: str) -> str:
    """The first line that says what went wrong: dl1's one-line ``error: ...`` (``error (rank R of N): ...`` under
    torchrun), else a traceback's last line (a rank's, not torchrun's own ``ChildFailedError``)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("error:", "error (rank ")):
            return line
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head and "elastic" not in head:
            return line
    return lines[-1] if lines else ""


def run_command(command: list[str], timeout: float, log: Path, env: dict[str, str]) -> tuple[int | None, str]:
    """Run ``command`` in its own process group (torchrun's workers included), stdout and stderr into ``log``;
    returns (exit code, None on a timeout; its stderr).  A timed-out group is stopped: SIGTERM, then SIGKILL."""
    log.parent.mkdir(parents=True, exist_ok=True)
    err_path = log.with_suffix(".stderr")
    with open(log, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            code = None
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
    return code, err_path.read_text(errors="replace")


def read_numbers(row: Row) -> None:
    """Steps, train_time_s, steps/s and the final training loss from the row's run folder."""
    folder = Path(row.run_dir)
    summary = json.loads((folder / "summary.json").read_text())
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("split") == "train"]
    last = train[-1] if train else {}
    logged = [r for r in records if r.get("split") == "train_iter"] or train  # gpt logs every --log_interval
    row.loss_key = LOSS_KEY.get(row.experiment, "loss")
    row.final_loss = logged[-1].get(row.loss_key) if logged else None
    row.steps = _find(summary, "steps")
    row.steps = row.steps if row.steps is not None else last.get("step")
    row.train_time_s = _find(summary, "train_time_s")
    row.train_time_s = row.train_time_s if row.train_time_s is not None else last.get("train_time_s")
    if row.steps and row.train_time_s:
        row.steps_per_s = round(row.steps / row.train_time_s, 3)
    world = json.loads((folder / "env.json").read_text()).get("world_size", 1)
    if row.final_loss is None or not math.isfinite(row.final_loss):
        row.status, row.error = "failed", f"no finite final training loss ({row.loss_key}={row.final_loss})"
    elif world != row.ranks:
        row.status, row.error = "failed", f"env.json says world_size {world}, expected {row.ranks}"
    elif row.steps_per_s is None:
        row.error = "no train_time_s or steps in the run folder: steps/s unknown"


def _find(obj: Any, key: str) -> Any:
    """The first value of ``key`` in a nested dict (breadth first): ``fit/steps`` or ``steps``."""
    queue = [obj]
    while queue:
        d = queue.pop(0)
        if isinstance(d, dict):
            if isinstance(d.get(key), int | float) and not isinstance(d.get(key), bool):
                return d[key]
            queue += [v for v in d.values() if isinstance(v, dict)]
    return None


def execute_row(row: Row, timeout: float, logs: Path, env: dict[str, str]) -> None:
    t0 = time.perf_counter()
    code, stderr = run_command(row.command, timeout, logs / f"{row.name}.log", env)
    row.wall_s = round(time.perf_counter() - t0, 1)
    if code is None:
        row.status, row.error = "failed", f"timed out after {timeout:.0f} s"
    elif code != 0:
        row.status, row.error = "failed", error_line(stderr) or f"exit code {code}"
    else:
        row.status = "ok"
        try:
            read_numbers(row)
        except (OSError, ValueError) as exc:
            row.status, row.error = "failed", f"unreadable run folder: {exc}"


# -- the equality checks -----------------------------------------------------------------------------------------------
def check_paths(device: Any) -> dict[str, float]:
    """The GPT's fused and explicit attention paths: the same logits and gradients; changing later tokens leaves the
    logits of earlier positions unchanged (causality)."""
    import torch

    from dl1.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64, embd_pdrop=0.0,
                          resid_pdrop=0.0, attn_pdrop=0.0)).to(device)
    idx = torch.randint(0, 65, (8, 64), device=device)
    out = {}
    for fused in (True, False):
        model.set_fused_attention(fused)
        model.zero_grad()
        logits, loss = model(idx, idx)
        loss.backward()
        out[fused] = (logits.detach(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    changed = idx.clone()
    changed[:, 32:] = (changed[:, 32:] + 1) % 65
    with torch.no_grad():
        causal = (model(changed)[0][:, :32] - model(idx)[0][:, :32]).abs().max().item()
    return {"logits_max_abs_diff": (out[True][0] - out[False][0]).abs().max().item(),
            "grads_max_abs_diff": (out[True][1] - out[False][1]).abs().max().item(),
            "causality_max_abs_diff": causal}


def check_hf(device: Any) -> dict[str, float]:
    """A small random GPT-2 (transformers) and dl1's copy of it: the same logits."""
    import torch
    import transformers

    from dl1.models.gpt import GPT

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=96, n_layer=3, n_head=4,
                                     bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval().to(device)
    ours = GPT.from_hf(hf).to(device).eval()
    idx = torch.randint(0, 300, (4, 64), device=device)
    with torch.no_grad():
        return {"hf_logits_max_abs_diff": (ours(idx)[0] - hf(idx).logits).abs().max().item()}


def equality_checks(device: str) -> dict[str, Any]:
    """Both checks on ``device`` with their tolerances, and what the device is."""
    import torch

    dev = torch.device(device)
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if dev.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(dev), gpus=torch.cuda.device_count())
    values = {**check_paths(dev), **check_hf(dev)}
    failed = [k for k, v in values.items() if not v <= TOLERANCES[k]]
    return {**info, "values": values, "tolerances": TOLERANCES, "passed": not failed, "failed": failed}


# -- the table ------------------------------------------------------------------------------------------------------
def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"


def table(rows: list[Row]) -> list[str]:
    lines = ["| experiment | data | precision | ranks | launch | steps | steps/s | final loss | wall s | status |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        loss = _number(r.final_loss, 4) + (f" ({r.loss_key})" if r.final_loss is not None and r.loss_key != "loss"
                                           else "")
        status = f"{r.status}: {r.error}" if r.error and r.status != "ok" else r.status
        if r.status == "ok" and r.error:
            status += f" ({r.error})"
        lines.append(f"| {r.experiment} | {r.data} | {r.precision} | {r.ranks} | {r.launch} | "
                     f"{'—' if r.steps is None else r.steps} | {_number(r.steps_per_s, 4)} | {loss} | "
                     f"{_number(r.wall_s, 3)} | {status.replace('|', '/')} |")
    return lines


def markdown(report: dict[str, Any], rows: list[Row]) -> str:
    where = report.get("gpu") or report["device"]
    gpus = f", {report['gpus']} visible" if report.get("gpus") else ""
    text = ["# GPU check", "",
            f"{where}{gpus}; torch {report['torch']}" + (f", CUDA {report['cuda']}" if report.get("gpus") else "")
            + f"; {'dry run; ' if report['dry_run'] else ''}{len(rows)} rows in {report['elapsed_s']:.0f} s "
            f"(budget {report['budget_s']:.0f} s); {report['failed']} failed. `{report['command']}`", "",
            *table(rows), ""]
    checks = report.get("checks") or {}
    if checks.get("values"):
        text += ["| equality check | max abs diff | tolerance |", "|---|---:|---:|"]
        text += [f"| {k} | {v:.3g} | {TOLERANCES[k]:g} |" for k, v in checks["values"].items()]
        text.append("")
    elif checks.get("status"):
        text += [f"Equality checks (attention paths, GPT-2): {checks['status']}"
                 + (f": {checks['error']}" if checks.get("error") else ""), ""]
    return "\n".join(text)


# -- main -----------------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="scripts/gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --dry_run: the CPU check)")
    p.add_argument("--dry_run", action="store_true", help="run the smoke rows only; print and check the others")
    p.add_argument("--data_dir", default="data", help="folder holding FashionMNIST/raw/ (and cifar-100-python/)")
    p.add_argument("--txt_file", default=None,
                   help="tiny Shakespeare (default DATA_DIR/tiny_shakespeare.txt, else dl1's own copy)")
    p.add_argument("--out", default="runs/gpu_check", help="folder of gpu_check.json and gpu_check.md")
    p.add_argument("--runs_dir", default=None, help="root of the rows' run folders (default OUT/runs)")
    p.add_argument("--budget_s", type=float, default=450.0, help="time for the whole check (default 450)")
    p.add_argument("--row_timeout_s", type=float, default=150.0, help="time for one row (default 150)")
    p.add_argument("--nproc", type=int, default=0, help="ranks of the torchrun rows (default: all visible GPUs; "
                                                        "2 on a CPU)")
    p.add_argument("--precisions", default=None, help="comma-separated (default bf16,fp16 on CUDA, fp32,bf16,fp16 "
                                                      "on a CPU)")
    p.add_argument("--experiments", default=",".join(EXPERIMENTS), help="comma-separated subset (default all six)")
    p.add_argument("--jobs", type=int, default=1, help="rows run at a time (default 1; more only for a CPU dry run: "
                                                       "GPU rows would share the GPU and its timing)")
    p.add_argument("--equality_checks", action="store_true", help=argparse.SUPPRESS)  # the checks' subprocess
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.precisions = [x for x in (args.precisions or ("bf16,fp16" if cuda else "fp32,bf16,fp16")).split(",") if x]
    args.experiments = [x for x in args.experiments.split(",") if x]
    bad = [x for x in args.precisions if x not in ("fp32", "bf16", "fp16")]
    bad += [x for x in args.experiments if x not in EXPERIMENTS]
    if bad or not args.precisions or not args.experiments:
        p.error(f"unknown or no precisions/experiments: {', '.join(bad) or '(none)'}")
    if args.nproc < 0 or args.jobs < 1 or args.budget_s < 0 or args.row_timeout_s <= 0:
        p.error("--nproc, --jobs, --budget_s and --row_timeout_s take positive numbers")
    if args.device != "cpu" and not cuda:
        p.error("--device is cuda, cuda:N or cpu")
    args.data_dir = Path(args.data_dir).resolve()
    args.txt_file = Path(args.txt_file).resolve() if args.txt_file else args.data_dir / "tiny_shakespeare.txt"
    if not args.txt_file.exists() and args.txt_file == args.data_dir / "tiny_shakespeare.txt":
        from dl1.data.text import resolve_text_file

        args.txt_file = resolve_text_file("shakespeare")  # not in the data folder: the copy shipped with dl1
    args.out = Path(args.out).resolve()
    args.runs_dir = Path(args.runs_dir).resolve() if args.runs_dir else args.out / "runs"
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    if args.equality_checks:
        print(json.dumps(equality_checks(args.device)))
        return 0
    t0 = time.perf_counter()
    import torch

    gpus = torch.cuda.device_count()  # no CUDA context in this process: the rows have the GPUs to themselves
    if args.device.startswith("cuda") and gpus == 0:
        print("error: no CUDA device visible (on a CPU: --device cpu --dry_run)", file=sys.stderr)
        return 2
    nproc = args.nproc or (gpus if args.device.startswith("cuda") else 2)
    session = args.runs_dir / datetime.now().strftime("%Y%m%d-%H%M%S")
    while session.exists():
        session = session.with_name(session.name + "-1")
    rows = plan(args, nproc, session)
    print(f"{len(rows)} rows, run folders in {session}, budget {args.budget_s:.0f} s", flush=True)
    env = child_env(args.device)
    report: dict[str, Any] = {"device": args.device, "torch": torch.__version__, "cuda": torch.version.cuda,
                              "gpus": gpus, "dry_run": args.dry_run, "nproc": nproc, "budget_s": args.budget_s,
                              "command": shlex.join(["python", "scripts/gpu_check.py", *argv]),
                              "started": datetime.now().isoformat(timespec="seconds")}
    deadline = t0 + args.budget_s
    check_cmd = [sys.executable, str(Path(__file__).resolve()), "--equality_checks", "--device", args.device]
    print(f"$ {shlex.join(check_cmd)}", flush=True)
    if args.dry_run:
        report["checks"] = {"status": "planned", "command": check_cmd}
    else:
        report["checks"] = run_checks(check_cmd, min(args.row_timeout_s, deadline - time.perf_counter()),
                                      session / "logs", env)
        report.update({k: report["checks"][k] for k in ("gpu", "gpus") if k in report["checks"]})
        print(f"  equality checks: {report['checks'].get('status')} {report['checks'].get('values', '')}", flush=True)
    run_rows(rows, args.jobs, deadline, args.row_timeout_s, session / "logs", env)
    failed = [r for r in rows if r.failed] + ([1] if report["checks"]["status"] not in ("ok", "planned") else [])
    report.update(elapsed_s=round(time.perf_counter() - t0, 1), failed=len(failed), runs_dir=str(session),
                  rows=[asdict(r) for r in rows])
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(report, rows)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(text + "\n")
    print("\n" + text, flush=True)
    print(f"written: {args.out / 'gpu_check.json'}, {args.out / 'gpu_check.md'}", flush=True)
    return 1 if failed else 0


def run_rows(rows: list[Row], jobs: int, deadline: float, row_timeout: float, logs: Path,
             env: dict[str, str]) -> None:
    """Run the pending rows in order (``jobs`` at a time), each within what is left of the budget."""
    from concurrent.futures import ThreadPoolExecutor

    def say(row: Row) -> None:
        print(f"  {row.name}: {row.status}" + (f" ({row.error})" if row.error else "")
              + (f", {row.steps_per_s} steps/s, final {row.loss_key} {row.final_loss:.4f}"
                 if row.status == "ok" and row.steps_per_s else ""), flush=True)

    def one(row: Row) -> None:
        left = deadline - time.perf_counter()
        print(f"$ {shlex.join(row.command)}", flush=True)
        if left <= 0:
            row.status = "not run: budget"
        else:
            execute_row(row, min(row_timeout, left), logs, env)
        say(row)

    for row in rows:
        if row.status != "pending":
            print(f"$ {shlex.join(row.command)}", flush=True)
            say(row)
    with ThreadPoolExecutor(max(jobs, 1)) as pool:
        list(pool.map(one, [r for r in rows if r.status == "pending"]))


def run_checks(command: list[str], timeout: float, logs: Path, env: dict[str, str]) -> dict[str, Any]:
    """The equality checks in their own process on the device: passed or failed, with the values."""
    if timeout <= 0:
        return {"status": "not run: budget"}
    code, stderr = run_command(command, timeout, logs / "equality_checks.log", env)
    try:
        result = json.loads((logs / "equality_checks.log").read_text().strip().splitlines()[-1]) if code == 0 else {}
    except (ValueError, IndexError):
        result = {}
    if not result:
        why = "timed out" if code is None else error_line(stderr) or f"exit code {code}"
        return {"status": "failed", "error": why}
    why = f"above tolerance: {', '.join(result['failed'])}" if result["failed"] else ""
    return {**result, "status": "ok" if result["passed"] else "failed", **({"error": why} if why else {})}


if __name__ == "__main__":
    raise SystemExit(main())
