"""Experiments: one small module per experiment, found by file name (``mlp_numpy.py`` -> ``dl1 run mlp-numpy``).

Each module defines:

* a module docstring whose first line is the one-line description shown by ``dl1 list``;
* ``Config``: a frozen dataclass whose fields (built with :func:`dl1.config.arg`) are the flags;
* ``SMOKE``: a dict of overrides for a seconds-long run on tiny or synthetic data (used by tests and ``--smoke``);
* ``run(cfg, run) -> dict``: wires data, model and loss together, logs through ``run.log`` and returns
  ``run.finish(...)``.

An experiment that trains with the engine data parallel under ``torchrun`` names its global-batch flags in
``GLOBAL_BATCH = ("batch_size",)``: under ``torchrun`` each must be a multiple of the number of ranks (every rank
takes an equal share); an experiment without it is refused under ``torchrun`` (it would run N times over).

An experiment that only evaluates (``EVALUATION_ONLY = True``, or a config with ``evaluate=True``) always gets a new
run folder, even when ``--resume`` names an existing one.

Heavy imports (open_clip, transformers, torchvision models) happen inside functions so that ``dl1 list`` and
``--help`` stay fast.  A config field named ``resume`` pointing at a run folder makes the run continue in that folder.

From Python (a notebook too): ``make_config(name, flags)`` gives the checked Config, ``execute(name, flags)`` runs it
and returns its summary; ``config=RUN_DIR`` starts from a run's ``config.json``.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib
import json
import os
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from dl1.config import config_to_dict, parse_config, to_flags, values_from_file
from dl1.errors import DL1Error, UsageError, first_line


def names() -> list[str]:
    """All experiment names, sorted."""
    here = Path(__file__).parent
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def describe(name: str) -> str:
    """First line of the experiment module's docstring, read without importing it."""
    path = Path(__file__).parent / f"{name.replace('-', '_')}.py"
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def load(name: str) -> ModuleType:
    """Import an experiment module by its CLI name; an unknown name names the closest one."""
    known = names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.4)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"
        raise UsageError(f"unknown experiment {name!r}{hint}")
    return importlib.import_module(f"dl1.experiments.{name.replace('-', '_')}")


def make_config(name: str, argv: list[str] | tuple[str, ...] = (), smoke: bool = False,
                overrides: dict[str, Any] | None = None, config: str | Path | dict[str, Any] | None = None) -> Any:
    """Build the validated Config of an experiment.  Later sources win: defaults, ``SMOKE`` (if asked), ``config``
    (a run's ``config.json``, its folder, or such a dict), the recipe of a ``--preset`` given here, ``overrides``,
    then the flags in ``argv``."""
    module = load(name)
    base = dict(getattr(module, "SMOKE", {})) if smoke else {}
    if config is not None:
        base.update(config_file_values(name, module, config))
    preset = _preset_name(list(argv)) or (overrides or {}).get("preset")
    presets = getattr(module, "PRESETS", {})
    if preset in presets:  # a recipe's values become the defaults; explicit flags still win
        base = {**base, **presets[preset]}
    base.update(overrides or {})
    doc = (module.__doc__ or "").strip()
    return parse_config(module.Config, list(argv), prog=f"dl1 run {name}", description=doc, base=base)


def config_file_values(name: str, module: ModuleType, config: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The values of a run's ``config.json`` (or of a run folder's, or of such a dict) for experiment ``name``.

    A config of another experiment is refused with one line.  Keys the experiment does not have are named in a note.
    ``resume`` is kept only for an evaluation (there it names what is evaluated): replaying a training run starts a
    new one, which gives the metrics the resumed run had."""
    source = "--config"
    if not isinstance(config, dict):
        path = Path(config)
        path = path / "config.json" if path.is_dir() else path
        source = f"--config {path}"
        from dl1.runtime import read_json

        try:
            config = read_json(path)
        except FileNotFoundError:
            raise UsageError(f"{source}: no such file (give a run's config.json or its folder)") from None
    if not isinstance(config, dict):
        raise UsageError(f"{source}: a config is a JSON object of flag names and values")
    other = config.get("experiment", name)
    if other != name:
        raise UsageError(f"{source} is the config of a {other} run, not of {name} (use dl1 run {other} --config ...)")
    values, unknown = values_from_file(module.Config, {k: v for k, v in config.items() if k != "experiment"}, source)
    if unknown:
        print(f"note: {source}: ignoring {', '.join(unknown)} (not a flag of {name})", file=sys.stderr, flush=True)
    evaluation = values.get("evaluate", False) or getattr(module, "EVALUATION_ONLY", False)
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
    from dl1.runtime import Run, check_output_folder

    module = load(name)
    cfg = make_config(name, argv, smoke=smoke, overrides=overrides, config=config)
    resume = getattr(cfg, "resume", None)
    continues = not getattr(cfg, "evaluate", False) and not getattr(module, "EVALUATION_ONLY", False)
    if run_dir is None and resume and continues and Path(resume).is_dir() and (Path(resume) / "checkpoints").is_dir():
        run_dir = resume  # continue training in the interrupted run's own folder
    check_world(name, module, cfg)
    from dl1.runtime import rank

    rank0 = rank() == 0  # under torchrun only rank 0 writes (and checks) the run folder
    if rank0 and run_dir is None:
        check_output_folder(out_dir, "--out_dir")
    elif rank0:
        check_output_folder(run_dir, "--run_dir")
        check_run_folder(name, Path(run_dir), resume if continues else None)
    preflight(module, cfg)
    joined = join_process_group()
    if command is None:
        command = command_line(name, argv, smoke=smoke, tensorboard=tensorboard, out_dir=out_dir, run_dir=run_dir,
                               config=config, overrides=overrides, config_cls=module.Config)
    run = Run(name, config_to_dict(cfg), root=out_dir, argv=launcher() + list(command), directory=run_dir,
              quiet=quiet or not rank0, enabled=rank0, tensorboard=tensorboard)
    try:
        with contextlib.ExitStack() as stack:
            if not rank0:  # rank 0 speaks for the run; the others' errors still reach stderr
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            return module.run(cfg, run)
    except BaseException:
        run.discard()  # nothing recorded yet (missing data, weights, a bad size): no empty folder
        raise
    finally:
        run.close()
        if joined:
            from dl1.train.distributed import cleanup

            cleanup()


def check_world(name: str, module: ModuleType, cfg: Any) -> None:
    """Under torchrun (``WORLD_SIZE`` > 1): the experiment trains data parallel, and its global batches can be shared
    evenly by the ranks; refused with one line before anything is loaded."""
    from dl1.runtime import world_size

    world = world_size()
    if world <= 1:
        return
    flags = getattr(module, "GLOBAL_BATCH", None)
    if flags is None:
        raise UsageError(f"{name} does not train data parallel: under torchrun its {world} processes would each do "
                         f"the whole run; start it without torchrun")
    for flag in flags:
        value = getattr(cfg, flag)
        if value % world:
            raise UsageError(f"--{flag} {value} is the global batch, shared by {world} ranks: give a multiple of "
                             f"{world}")


def join_process_group() -> bool:
    """Join torchrun's process group before the run folder is made (its ``env.json`` records the backend and the
    world size); True when this call joined it (the caller leaves it at the end)."""
    from dl1.runtime import world_size

    if world_size() <= 1:
        return False
    import torch.distributed as dist

    from dl1.train.distributed import init_distributed

    if dist.is_available() and dist.is_initialized():
        return False  # joined by the caller (a test, a notebook): the caller leaves it
    init_distributed()
    return True


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
    from dl1.runtime import local_world_size, world_size

    world, local = world_size(), local_world_size()
    if world <= 1:
        return []
    nodes = world // local
    return ["torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else []), f"--nproc_per_node={local}", "-m"]


def check_run_folder(name: str, folder: Path, resume: str | None) -> None:
    """Refuse a run folder that holds a run unless ``resume`` names it (the folder or a checkpoint in it); for one
    that is continued, check before anything is written that it is a run of ``name`` and that its checkpoint reads
    (a truncated or hostile file is refused here, with the folder unchanged)."""
    from dl1.runtime import checkpoint_file, holds_run

    if not holds_run(folder):
        return
    if not resume or not _inside(Path(resume), folder):
        raise UsageError(f"--run_dir {folder} already holds a run; continue it with --resume {folder}, or choose "
                         f"a new folder")
    config = folder / "config.json"
    if config.exists():
        try:
            other = json.loads(config.read_bytes().decode("utf-8")).get("experiment")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise DL1Error(f"cannot resume {folder}: its config.json is unreadable ({first_line(exc)})") from None
        if other != name:
            raise UsageError(f"cannot resume {folder} with {name}: it is a run of {other!r}")
    from dl1.train.checkpoint import load_checkpoint

    load_checkpoint(checkpoint_file(resume, prefer="last"), mmap=True)


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def preflight(module: ModuleType, cfg: Any) -> None:
    """Fail on a missing weights file or dataset before the experiment imports torch or creates its run folder (the
    error then comes in ~0.1 s instead of seconds), and on a ``--precision`` the device cannot run; then run the
    experiment's own ``preflight(cfg)`` if it has one."""
    for flag in ("clip_weights", "weights"):  # an explicit weights file that is not there
        value = getattr(cfg, flag, None)
        if isinstance(value, str) and value not in ("", "imagenet", "random") and not Path(value).is_file():
            raise DL1Error(f"--{flag}: weights file not found: {value}")
    name, synthetic = getattr(cfg, "dataset", None), getattr(cfg, "synthetic_data", False)
    if isinstance(name, str) and hasattr(cfg, "data_dir") and not synthetic:
        from dl1.data import vision

        if name in vision.DATASETS:
            vision.prepare(name, cfg.data_dir)
    precision = getattr(cfg, "precision", "fp32")
    if precision != "fp32":  # a precision the device cannot run (fp16 without CUDA): one line, nothing loaded
        from dl1.runtime import choose_device
        from dl1.train.precision import check as check_precision

        check_precision(precision, choose_device(getattr(cfg, "device", "auto")))
    check = getattr(module, "preflight", None)
    if callable(check):
        check(cfg)
