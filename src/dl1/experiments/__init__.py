"""Experiments: one entry per experiment in :data:`EXPERIMENTS`, declared in its spec module
(``dl1/experiments/mlp_numpy.py`` -> ``dl1 run mlp-numpy``) as ``EXPERIMENT = Experiment.of(...)``; see
:class:`dl1.experiments.registry.Experiment` for the contract (Config, run, smoke, presets, global_batch, resolve,
preflight, figures, export, evaluation_only).  The spec modules import no torch, so ``dl1 list`` and ``--help`` stay
fast; each experiment's ``run`` lives in ``dl1/experiments/runners/NAME.py``.

An experiment that trains with the engine data parallel under ``torchrun`` declares its global-batch flags
(``global_batch=("batch_size",)``): each must be a multiple of the number of ranks; an experiment without them is
refused under ``torchrun`` (it would run N times over).  An evaluation (``evaluation_only``, or its ``evaluate_flag``
set) always gets a new run folder, even when ``--resume`` names an existing one; a ``--resume`` naming a run folder
otherwise makes the run continue in that folder; its checkpoint is read once, checked before anything is written,
and handed on to the runner and the engine through the Run (``run.resume_state``).

From Python (a notebook too): ``make_config(name, flags)`` gives the checked Config, ``execute(name, flags)`` runs it
and returns its summary; ``config=RUN_DIR`` starts from a run's ``config.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from dl1.config import config_to_dict, parse_config, to_flags, values_from_file
from dl1.errors import DL1Error, UsageError, first_line
from dl1.experiments import (
    aae,
    clip_cross_dataset,
    clip_prompt,
    clip_zeroshot,
    cnn_compare,
    gnn,
    gpt,
    mini_clip,
    mlp_numpy,
    mlp_pytorch,
    resnet_transfer,
    vae,
)
from dl1.experiments.registry import Experiment
from dl1.report.summary import require
from dl1.run.files import read_json
from dl1.run.folder import Run
from dl1.run.reader import RunFolder, check_output_folder, checkpoint_file, holds_run
from dl1.run.resume import resolve
from dl1.run.torchrun import local_world_size, rank, world_size

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in sorted(
    (m.EXPERIMENT for m in (aae, clip_cross_dataset, clip_prompt, clip_zeroshot, cnn_compare, gnn, gpt, mini_clip,
                            mlp_numpy, mlp_pytorch, resnet_transfer, vae)), key=lambda e: e.name)}


def names() -> list[str]:
    """All experiment names, sorted."""
    return list(EXPERIMENTS)


def describe(name: str) -> str:
    """The one-line description of ``dl1 list``."""
    return load(name).description


def load(name: str) -> Experiment:
    """The registry entry of an experiment by its CLI name; an unknown name names the closest one."""
    if name not in EXPERIMENTS:
        close = difflib.get_close_matches(name, names(), n=1, cutoff=0.4)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(names())}"
        raise UsageError(f"unknown experiment {name!r}{hint}")
    return EXPERIMENTS[name]


def make_config(name: str, argv: list[str] | tuple[str, ...] = (), smoke: bool = False,
                overrides: dict[str, Any] | None = None, config: str | Path | dict[str, Any] | None = None) -> Any:
    """Build the validated Config of an experiment.  Later sources win: defaults, its ``smoke`` values (if asked),
    ``config`` (a run's ``config.json``, its folder, or such a dict), the recipe of a ``--preset`` given here,
    ``overrides``, then the flags in ``argv``.  The entry's ``resolve`` step (file reads: a run folder given for a
    weights file) runs on the parsed values, before they are checked."""
    entry = load(name)
    base = dict(entry.smoke) if smoke else {}
    if config is not None:
        base.update(config_file_values(entry, config))
    preset = _preset_name(list(argv)) or (overrides or {}).get("preset")
    if preset in entry.presets:  # a recipe's values become the defaults; explicit flags still win
        base = {**base, **entry.presets[preset]}
    base.update(overrides or {})
    return parse_config(entry.Config, list(argv), prog=f"dl1 run {name}", description=entry.doc, base=base,
                        resolve=entry.resolve)


def config_file_values(entry: Experiment, config: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The values of a run's ``config.json`` (or of a run folder's, or of such a dict) for experiment ``name``.

    A config of another experiment is refused with one line.  Keys the experiment does not have are named in a note.
    ``resume`` is kept only for an evaluation (there it names what is evaluated): replaying a training run starts a
    new one, which gives the metrics the resumed run had."""
    name, source = entry.name, "--config"
    if not isinstance(config, dict):
        path = Path(config)
        path = path / "config.json" if path.is_dir() else path
        source = f"--config {path}"
        try:
            config = read_json(path)
        except FileNotFoundError:
            raise UsageError(f"{source}: no such file (give a run's config.json or its folder)") from None
    if not isinstance(config, dict):
        raise UsageError(f"{source}: a config is a JSON object of flag names and values")
    other = config.get("experiment", name)
    if other != name:
        raise UsageError(f"{source} is the config of a {other} run, not of {name} (use dl1 run {other} --config ...)")
    values, unknown = values_from_file(entry.Config, {k: v for k, v in config.items() if k != "experiment"}, source)
    if unknown:
        print(f"note: {source}: ignoring {', '.join(unknown)} (not a flag of {name})", file=sys.stderr, flush=True)
    evaluation = entry.evaluation_only or bool(entry.evaluate_flag and values.get(entry.evaluate_flag))
    if values.get("resume") and not evaluation:
        print(f"note: {source}: not resuming from {values['resume']} (a replay is a new run; add --resume to "
              "continue one)", file=sys.stderr, flush=True)
        values["resume"] = None
    return values


def _preset_name(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--preset="):
            return a.split("=", 1)[1]
    return None


def execute(name: str, argv: list[str] | tuple[str, ...] = (), *, smoke: bool = False,
            overrides: dict[str, Any] | None = None, out_dir: str | Path = "runs",
            run_dir: str | Path | None = None, quiet: bool = False, tensorboard: bool = False,
            config: str | Path | dict[str, Any] | None = None, command: list[str] | None = None) -> dict[str, Any]:
    """Run an experiment end to end (what ``dl1 run`` does) and return its summary.

    ``config`` replays a run's configuration (``config.json`` or its folder; see :func:`make_config`).  ``command``
    is what ``argv.txt`` and the report record (``dl1 run`` passes the command as typed); by default it is the
    command that does what this call does.

    A ``run_dir`` that already holds a run is only continued, when ``--resume`` names it, and only after its
    experiment and checkpoint have been checked; the folder's lock is released however the run ends, and a run that
    fails before it records anything leaves no folder behind."""
    entry = load(name)
    cfg = make_config(name, argv, smoke=smoke, overrides=overrides, config=config)
    if "resume" in entry.field_names() and cfg.resume == "auto":  # a requeued job: continue, or start fresh
        cfg = dataclasses.replace(cfg, resume=resolve(run_dir, rank0=rank() == 0))
    resume = cfg.resume if "resume" in entry.field_names() else None
    continues = not entry.is_evaluation(cfg)
    if run_dir is None and resume and continues and Path(resume).is_dir() and (Path(resume) / "checkpoints").is_dir():
        run_dir = resume  # continue training in the interrupted run's own folder
    check_world(entry, cfg)
    rank0 = rank() == 0  # under torchrun only rank 0 writes (and checks) the run folder
    resume_from = None  # a continued run's checkpoint, read once here and handed on through the Run
    if rank0 and run_dir is None:
        check_output_folder(out_dir, "--out_dir")
    elif rank0:
        check_output_folder(run_dir, "--run_dir")
        resume_from = check_run_folder(name, Path(run_dir), resume if continues else None)
    preflight(entry, cfg)
    joined = join_process_group(cfg.dist_timeout if "dist_timeout" in entry.field_names() else None)
    if command is None:
        command = command_line(name, argv, smoke=smoke, tensorboard=tensorboard, out_dir=out_dir, run_dir=run_dir,
                               config=config, overrides=overrides, config_cls=entry.Config)
    run = Run(name, config_to_dict(cfg), root=out_dir, argv=launcher() + list(command), directory=run_dir,
              quiet=quiet or not rank0, enabled=rank0, tensorboard=tensorboard, distributed=process_group(),
              resume_from=resume_from)
    try:
        with contextlib.ExitStack() as stack:
            if not rank0:  # rank 0 speaks for the run; the others' errors still reach stderr
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            summary = entry.run(cfg, run)
            for key in entry.summary_keys:  # what report and tour read: the schema of dl1.report.summary
                require(summary, key, f"the summary of {name}")
            return summary
    except BaseException:
        run.discard()  # nothing recorded yet (missing data, weights, a bad size): no empty folder
        raise
    finally:
        run.close()
        if joined:
            _distributed().cleanup()


def check_world(entry: Experiment, cfg: Any) -> None:
    """Under torchrun (``WORLD_SIZE`` > 1): the experiment trains data parallel, and its global batches can be shared
    evenly by the ranks; refused with one line before anything is loaded."""
    world = world_size()
    if world <= 1:
        return
    if entry.global_batch is None:
        raise UsageError(f"{entry.name} does not train data parallel: under torchrun its {world} processes would "
                         f"each do the whole run; start it without torchrun")
    distributed = _distributed()
    info = distributed.DistInfo(rank(), world, 0)  # the group is not joined yet: torchrun's environment says the size
    for flag in entry.global_batch:  # the one rule for sharing a global batch
        distributed.local_batch(getattr(cfg, flag), f"--{flag}", info=info)


def join_process_group(timeout: float | None = None) -> bool:
    """Join torchrun's process group before the run folder is made (its ``env.json`` records the backend and the
    world size); True when this call joined it (the caller leaves it at the end).  ``timeout``: ``--dist_timeout``,
    the seconds a rank waits for the others."""
    if world_size() <= 1:
        return False
    distributed = _distributed()
    if distributed.dist.is_available() and distributed.dist.is_initialized():
        return False  # joined by the caller (a test, a notebook): the caller leaves it
    distributed.init_distributed(timeout=timeout)
    return True


def process_group() -> dict[str, Any]:
    """The joined process group's facts for ``env.json`` (``{}`` in one process)."""
    if world_size() <= 1:
        return {}
    return _distributed().describe()


def _distributed() -> ModuleType:
    """:mod:`dl1.train.distributed` (torch.distributed), imported only under torchrun: one process never loads it."""
    from dl1.train import distributed

    return distributed


def command_line(name: str, argv: list[str] | tuple[str, ...] = (), *, smoke: bool = False,
                 tensorboard: bool = False, out_dir: str | Path = "runs", run_dir: str | Path | None = None,
                 config: str | Path | dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
                 config_cls: type | None = None) -> list[str]:
    """The ``dl1 run`` command that does what :func:`execute` does with these arguments (``overrides`` as flags;
    a config given as a dict cannot be written as a flag and is left out)."""
    out = ["dl1", "run", name]
    if smoke:
        out.append("--smoke")
    if tensorboard:
        out.append("--tensorboard")
    if str(out_dir) != "runs":
        out += ["--out_dir", str(out_dir)]
    if run_dir is not None:
        out += ["--run_dir", str(run_dir)]
    if config is not None and not isinstance(config, dict):
        out += ["--config", str(config)]
    if overrides:
        out += to_flags(config_cls or load(name).Config, overrides)
    return out + list(argv)


def launcher() -> list[str]:
    """``torchrun --nproc_per_node N -m`` under torchrun (the command then starts with ``dl1``), else nothing."""
    world, local = world_size(), local_world_size()
    if world <= 1:
        return []
    nodes = world // local
    return ["torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else []), f"--nproc_per_node={local}", "-m"]


def check_run_folder(name: str, folder: Path, resume: str | None) -> tuple[Path, Any] | None:
    """Refuse a run folder that holds a run unless ``resume`` names it (the folder or a checkpoint in it); for one
    that is continued, check before anything is written that it is a run of ``name`` and that its checkpoint reads
    (a truncated or hostile file is refused here, with the folder unchanged).  Returns ``(path, checkpoint)`` of the
    continued run (read once, tensors mapped: the Run hands it on to the runner and the engine, which do not read
    the file again), else None."""
    if not holds_run(folder):
        return None
    if not resume or not _inside(Path(resume), folder):
        raise UsageError(f"--run_dir {folder} already holds a run; continue it with --resume {folder}, or choose "
                         f"a new folder")
    if (folder / "config.json").exists():
        try:
            other = RunFolder(folder).config.get("experiment")
        except DL1Error as exc:
            raise DL1Error(f"cannot resume {folder}: its config.json is unreadable ({first_line(exc)})") from None
        if other != name:
            raise UsageError(f"cannot resume {folder} with {name}: it is a run of {other!r}")
    from dl1.train.checkpoint import load_checkpoint

    path = checkpoint_file(resume, prefer="last")
    return path, load_checkpoint(path, mmap=True)


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def preflight(entry: Experiment, cfg: Any) -> None:
    """The experiment's declared preflight checks, in order: a missing weights file or dataset fails before torch is
    imported and before the run folder is made (the error then comes in ~0.1 s instead of seconds)."""
    for check in entry.preflight:
        check(cfg)
