"""The experiment contract, declared: one :class:`Experiment` entry per experiment, read by ``dl1 list``, ``dl1 run``,
``dl1 report``, ``dl1 export``, ``dl1 sweep`` and ``dl1 tour`` (and nothing is looked up by ``getattr``).

An experiment is two modules: its spec ``dl1/experiments/NAME.py`` (the module docstring, the ``Config`` dataclass,
presets, torch-free preflight checks and the entry ``EXPERIMENT``), which ``--help`` and ``dl1 list`` import, and its
runner ``dl1/experiments/runners/NAME.py`` (``run(cfg, run)`` and its helpers, with ordinary top-level imports of
torch and the rest).  The entry names the runner's functions with :class:`dl1.lazy.Ref` (``"module:function"``,
imported on the first call), so the spec stays light.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dl1.lazy import Ref


def runner(name: str, function: str = "run") -> Ref:
    """``function`` of the runner module of experiment module ``name`` (``dl1.experiments.runners.NAME``)."""
    return Ref(f"dl1.experiments.runners.{name}:{function}")


@dataclass
class Experiment:
    """One experiment's declared contract.

    * ``name``: the command-line name (``dl1 run NAME``);
    * ``Config``: a frozen dataclass whose fields (built with :func:`dl1.config.arg`) are the flags;
    * ``run(cfg, run) -> dict``: wires data, model and loss, logs through ``run.log``, returns ``run.finish(...)``;
    * ``description``: the one line of ``dl1 list``; ``doc``: the text above the flags of ``--help``;
    * ``smoke``: flag overrides for a seconds-long run on tiny or synthetic data (tests, ``--smoke``);
    * ``presets``: named recipes, chosen with ``--preset NAME`` (their values become the defaults);
    * ``global_batch``: the flags that are global batches when it trains data parallel under ``torchrun`` (each
      must be a multiple of the number of ranks); ``None``: it does not train data parallel, and is refused there;
    * ``resolve(cfg) -> cfg``: the one step of making a config that may read files (a mini-clip run folder given
      as ``--clip_weights`` becomes its weights file, ``--arch mini`` alone the newest run's); run by
      :func:`dl1.experiments.make_config` on the parsed flags before they are checked, never by ``--help``; the
      Config's own construction (``__post_init__``) reads nothing;
    * ``preflight``: the checks run before the run folder is made and before torch is imported (missing data or
      weights, a precision the device cannot run, ...), each ``check(cfg)``, in order;
    * ``figures(run_dir)``: rebuilds its figures from a run folder (``dl1 report``); ``None``: the learning curves;
    * ``export(run_dir, config, prefer) -> Exported``: its trained model for ``dl1 export``; ``no_export``: why it
      has none (exactly one of the two is given);
    * ``evaluation_only``: it trains nothing, so a ``--resume`` names what is evaluated and every run gets a new
      folder; ``evaluate_flag``: the boolean flag that makes one run such an evaluation (clip-prompt's
      ``--evaluate``);
    * ``summary_keys``: the dotted keys of :mod:`dl1.report.summary` that its ``summary.json`` always holds (what
      report and tour read); every run checks them when it returns, so a renamed key fails at once.
    """

    name: str
    Config: type
    run: Callable[[Any, Any], dict[str, Any]]
    description: str
    doc: str = ""
    smoke: Mapping[str, Any] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    global_batch: tuple[str, ...] | None = None
    resolve: Callable[[Any], Any] | None = None
    preflight: tuple[Callable[[Any], None], ...] = ()
    figures: Callable[[Any], Any] | None = None
    export: Callable[[Any, dict[str, Any], str], Any] | None = None
    no_export: str | None = None
    evaluation_only: bool = False
    evaluate_flag: str | None = None
    summary_keys: tuple[str, ...] = ()

    @classmethod
    def of(cls, module_name: str, doc: str | None, **kwargs: Any) -> Experiment:
        """The entry of spec module ``module_name`` (``dl1.experiments.vae``): its name with dashes, its docstring as
        ``doc`` and first line as ``description``, its runner's ``run``."""
        short = module_name.rsplit(".", 1)[-1]
        text = (doc or "").strip()
        kwargs.setdefault("run", runner(short))
        return cls(name=short.replace("_", "-"), description=text.splitlines()[0] if text else "", doc=text,
                   **kwargs)

    def is_evaluation(self, cfg: Any) -> bool:
        """True when this run only evaluates (the experiment trains nothing, or ``--evaluate`` was given)."""
        return self.evaluation_only or (self.evaluate_flag is not None and bool(getattr(cfg, self.evaluate_flag)))

    def field_names(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self.Config)}
