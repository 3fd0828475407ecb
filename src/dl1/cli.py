"""The ``dl1`` command line: ``list``, ``run NAME``, ``report``, ``bench``, ``tour``, ``sweep``, ``generate``,
``export``, and ``--version``."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Sequence

from dl1 import __version__, experiments
from dl1.config import build_parser, config_to_dict
from dl1.errors import DL1Error, UsageError
from dl1.run.files import json_text
from dl1.run.torchrun import rank, world_size

USAGE = """usage: dl1 COMMAND [...]   (dl1 --version: the version)

commands:
  list                      name every experiment with a one-line description
  run NAME [flags]          run an experiment (dl1 run NAME --help lists its flags and defaults)
                            common flags: --out_dir DIR (default runs), --run_dir DIR (exact folder),
                            --smoke (seconds-long run on tiny data), --tensorboard,
                            --config RUN/config.json (replay a run), --print_config
  export RUN [--format F]   a run's trained model as model.safetensors + config.json (F = hf: a GPT as a
                            Hugging Face GPT2LMHeadModel folder)
  report RUN_DIR...         rebuild figures and report.md from run folders; several runs -> one comparison table
  sweep NAME --grid k=v,..  run the product of grids, skipping finished runs
  bench [NAME...]           run the benchmarks and print one table of ratios
  tour [--budget B]         every part of the course on offline data, one report
  generate                  sample text from a trained GPT checkpoint or GPT-2 weights
"""

# command -> module with a main(argv) -> int
COMMANDS = {
    "report": "dl1.report.cli",
    "sweep": "dl1.sweep",
    "bench": "dl1.bench",
    "tour": "dl1.tour",
    "generate": "dl1.generate",
    "export": "dl1.export",
}


def _cmd_list() -> int:
    width = max((len(n) for n in experiments.names()), default=0)
    for name in experiments.names():
        print(f"{name:<{width}}  {experiments.describe(name)}")
    return 0


def _pop_flag(argv: list[str], flag: str) -> bool:
    if flag in argv:
        argv.remove(flag)
        return True
    return False


def _pop_value(argv: list[str], flag: str, default: str) -> str:
    for i, a in enumerate(argv):
        if a == flag:
            if i + 1 >= len(argv):
                raise UsageError(f"{flag} needs a value")
            value = argv[i + 1]
            del argv[i:i + 2]
            return value
        if a.startswith(flag + "="):
            del argv[i]
            return a.split("=", 1)[1]
    return default


RUN_EPILOG = """common flags:
  --out_dir DIR      root of run folders (default: runs)
  --run_dir DIR      exact folder of this run (default: OUT_DIR/NAME/<timestamp>)
  --config FILE      start from a run's config.json (or its folder): exactly that configuration; flags given
                     with it win (a config of another experiment is refused)
  --print_config     print the resolved configuration as JSON (what config.json will hold) and exit
  --tensorboard      also write TensorBoard event files to RUN_DIR/tensorboard
  --smoke            seconds-long run on tiny/synthetic data (a check, not a result)"""


def _cmd_run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: dl1 run NAME [flags]   (dl1 list shows the names; dl1 run NAME --help the flags)")
        return 0 if argv else 2
    typed = ["dl1", "run", *argv]  # recorded in argv.txt as typed
    name, rest = argv[0], list(argv[1:])
    smoke = _pop_flag(rest, "--smoke")
    tensorboard = _pop_flag(rest, "--tensorboard")
    print_config = _pop_flag(rest, "--print_config")
    out_dir = _pop_value(rest, "--out_dir", "runs")
    run_dir = _pop_value(rest, "--run_dir", "") or None
    config = _pop_value(rest, "--config", "") or None
    if "-h" in rest or "--help" in rest:
        entry = experiments.load(name)
        parser = build_parser(entry.Config, f"dl1 run {name}", entry.doc)
        parser.epilog = (f"{RUN_EPILOG}\n\ndocs: docs/parts/{name}.md (the method, figures, numbers, the course's "
                         f"questions);\n      make docs-serve serves it at http://127.0.0.1:8000/parts/{name}/")
        parser.print_help()
        return 0
    if print_config:
        cfg = experiments.make_config(name, rest, smoke=smoke, config=config)
        print(json_text({"experiment": name, **config_to_dict(cfg)}), end="")
        return 0
    experiments.execute(name, rest, smoke=smoke, out_dir=out_dir, run_dir=run_dir, tensorboard=tensorboard,
                        config=config, command=typed)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dl1`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    command, rest = (args[0], args[1:]) if args else ("", [])
    try:
        if not args or command in ("-h", "--help"):
            print(USAGE)
            return 0 if args else 2
        if command in ("-V", "--version"):
            print(f"dl1 {__version__}")
            return 0
        if command == "list":
            return _cmd_list()
        if command == "run":
            return _cmd_run(rest)
        if command in COMMANDS:
            module = importlib.import_module(COMMANDS[command])
            return int(module.main(rest) or 0)
        close = difflib.get_close_matches(command, ["list", "run", *COMMANDS], n=1)
        raise UsageError(f"unknown command {command!r}" + (f"; did you mean {close[0]}?" if close else ""))
    except DL1Error as exc:
        where = f" (rank {rank()} of {world_size()})" if world_size() > 1 else ""
        print(f"error{where}: {exc}", file=sys.stderr)  # under torchrun every rank says which it is
        return exc.exit_code
    except RuntimeError as exc:  # under torchrun, a rank that lost another: one line, not gloo's or NCCL's traceback
        cause = _lost_peer(exc)
        if cause is None:
            raise
        print(f"error (rank {rank()} of {world_size()}): {cause}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (dl1 list | head -1): stop quietly
        _silence_stdout()
        return 1


def _lost_peer(exc: RuntimeError) -> str | None:
    """The one line for a collective that timed out (``--dist_timeout``) or lost its peer's connection; None for
    any other error, and in one process."""
    if world_size() <= 1:
        return None
    from dl1.train.distributed import lost_peer

    return lost_peer(exc)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
