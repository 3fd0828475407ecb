"""Every registry entry declares the experiment contract (see :class:`dl1.experiments.registry.Experiment`), and the
readers of summaries fail loudly on a key the experiments no longer write."""

from __future__ import annotations

import dataclasses

import pytest

from dl1 import experiments
from dl1.config import parse_config
from dl1.errors import DL1Error
from dl1.experiments.registry import Experiment
from dl1.lazy import Ref
from dl1.report import summary as keys

NAMES = experiments.names()


def test_the_registry_holds_every_experiment_once():
    assert NAMES == sorted(set(NAMES)) and len(NAMES) >= 12
    assert all(isinstance(e, Experiment) and e.name == name for name, e in experiments.EXPERIMENTS.items())


SCHEMA = {v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str)}


def contract_problems(entry: Experiment) -> list[str]:
    """What ``entry`` fails to declare (empty: the contract holds)."""
    problems = []
    if not (dataclasses.is_dataclass(entry.Config) and entry.Config.__dataclass_params__.frozen):
        return [f"{entry.name}: Config is not a frozen dataclass"]
    fields = entry.field_names()
    if not entry.description.strip() or not entry.doc.startswith(entry.description):
        problems.append("no description (the first line of the spec's docstring)")
    for what, ref in (("run", entry.run), ("figures", entry.figures), ("export", entry.export),
                      ("resolve", entry.resolve), *(
            ("preflight", check) for check in entry.preflight)):
        if ref is not None and not callable(ref.resolve() if isinstance(ref, Ref) else ref):
            problems.append(f"{what} is not callable")
    for what, values in (("smoke", entry.smoke), *((f"preset {k}", v) for k, v in entry.presets.items())):
        if set(values) - fields:
            problems.append(f"{what} names flags {entry.name} does not have: {sorted(set(values) - fields)}")
        else:
            parse_config(entry.Config, [], prog=entry.name, base=dict(values))  # valid values, or UsageError
    named = [*(entry.global_batch or ()), *([entry.evaluate_flag] if entry.evaluate_flag else []),
             *(f for check in entry.preflight for f in getattr(check, "fields", ()))]
    if set(named) - fields:
        problems.append(f"global_batch, evaluate_flag or a preflight check names {sorted(set(named) - fields)}")
    if entry.global_batch == ():
        problems.append("global_batch=() names no flag (None: not data parallel)")
    if (entry.export is None) == (entry.no_export is None):
        problems.append("declare export= or no_export=, exactly one")
    if set(entry.summary_keys) - SCHEMA:
        problems.append(f"summary keys not named in dl1.report.summary: {sorted(set(entry.summary_keys) - SCHEMA)}")
    return problems


@pytest.mark.parametrize("name", NAMES)
def test_entry_declares_the_contract(name):
    assert contract_problems(experiments.load(name)) == []


def test_the_contract_check_finds_what_is_missing():
    good = experiments.load("vae")
    assert contract_problems(dataclasses.replace(good, Config=dict)) == ["vae: Config is not a frozen dataclass"]
    broken = dataclasses.replace(good, description="", smoke={"epochz": 1}, no_export="why", global_batch=("bs",),
                                 summary_keys=("test.bits",))
    problems = contract_problems(broken)
    assert len(problems) == 5 and "epochz" in problems[1] and "bs" in problems[2], problems
    with pytest.raises(ModuleNotFoundError):
        contract_problems(dataclasses.replace(good, run=Ref("dl1.nowhere:run")))


@pytest.mark.parametrize("flag, name", [("precision", "gpt"), ("seed", "vae"), ("device", "mlp-pytorch")])
def test_shared_run_arguments_keep_their_flags(flag, name):
    cfg = experiments.make_config(name, [f"--{flag}", {"precision": "bf16", "seed": "7", "device": "cpu"}[flag]])
    assert str(getattr(cfg, flag)) == {"precision": "bf16", "seed": "7", "device": "cpu"}[flag]


def test_a_renamed_summary_key_fails_loudly_in_a_report_row(monkeypatch):
    """The tour's row of the VAE reads keys.TEST_BPD; an experiment that wrote another key makes the row an error
    naming the missing key (never a silently empty cell)."""
    from dl1 import tour

    part = next(p for p in tour._parts("shakespeare", None, None) if p.experiment == "vae")
    written = {"test_bpd": 1.5, "best_epoch": 3}
    assert tour._numbers(part, written)[0][1] == "1.5"
    monkeypatch.setattr(keys, "TEST_BPD", "test_bits_per_dim")  # the schema renamed, the writer not
    part = next(p for p in tour._parts("shakespeare", None, None) if p.experiment == "vae")
    with pytest.raises(DL1Error, match="test_bits_per_dim"):
        tour._numbers(part, written)
    renamed = {"test_bits_per_dim": 1.5}  # or the writer renamed, the reader not
    monkeypatch.setattr(keys, "TEST_BPD", "test_bpd")
    part = next(p for p in tour._parts("shakespeare", None, None) if p.experiment == "vae")
    with pytest.raises(DL1Error, match="'test_bpd'"):
        tour._numbers(part, renamed)


def test_require_names_the_closest_key():
    with pytest.raises(keys.SummaryKeyError, match=r"no 'results.test.top1' \(it has 'results.test.top_1'\)"):
        keys.require({"results": {"test": {"top_1": 50.0}}}, keys.RESULTS_TEST_TOP1)
    assert keys.require({"results": {"test": {"top1": 50.0}}}, keys.RESULTS_TEST_TOP1) == 50.0


@pytest.mark.parametrize("name", NAMES)
def test_shared_run_arguments_are_declared_once(name):
    """A Config's --device, --seed, --precision, --threads, --resume, --data_dir are RunArgs' fields (same type,
    range, choices), taken with dl1.config.shared, never declared again."""
    import typing

    from dl1.config import RUN_ARGS, RunArgs

    entry = experiments.load(name)
    hints, ours = typing.get_type_hints(entry.Config), typing.get_type_hints(RunArgs)
    for f in dataclasses.fields(entry.Config):
        if f.name in RUN_ARGS:
            assert hints[f.name] == ours[f.name], f"--{f.name} of {name} has another type"
            same = {k: v for k, v in f.metadata.items() if k != "help"}
            assert same == {k: v for k, v in RUN_ARGS[f.name].metadata.items() if k != "help"}, f"--{f.name}"


def test_a_summary_without_a_declared_key_fails_the_run_loudly(tmp_path, monkeypatch):
    """The writer's side of the schema: a run whose summary lacks a key its entry declares (here: the schema renamed
    under it) ends with an error naming the key, not with a summary the tour would show as empty."""
    entry = experiments.load("gnn")
    assert keys.GNN_WALKS_AGREE in entry.summary_keys
    monkeypatch.setattr(entry, "summary_keys", ("q3_1.walk_counts_agree",))
    with pytest.raises(keys.SummaryKeyError, match="'q3_1.walk_counts_agree'.*'q3_1.all_walk_counts_agree'"):
        experiments.execute("gnn", smoke=True, out_dir=tmp_path, quiet=True)


def test_configs_read_no_file_and_resolve_is_a_registry_step(tmp_path, monkeypatch):
    """Configs stay pure: building one (``__post_init__``), even with the values that name files or folders, touches
    no file; the entry's ``resolve`` step, run by ``make_config`` before the checks, does (a mini-clip run folder
    given as --clip_weights becomes its weights file); ``--help`` runs neither."""
    import builtins
    import os

    from dl1.cli import main
    from dl1.hub.clip import MINI_WEIGHTS

    folder = tmp_path / "mini-run"  # a folder without the mini-CLIP's weights: resolve refuses it
    folder.mkdir()
    touched: list[str] = []
    real_stat, real_open = os.stat, builtins.open

    def stat(path, *args, **kwargs):
        touched.append(str(path))
        return real_stat(path, *args, **kwargs)

    def opened(path, *args, **kwargs):
        touched.append(str(path))
        return real_open(path, *args, **kwargs)

    resolving = [e for e in experiments.EXPERIMENTS.values() if e.resolve is not None]
    assert {e.name for e in resolving} >= {"clip-zeroshot", "clip-prompt", "clip-cross-dataset"}
    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(builtins, "open", opened)
    for entry in experiments.EXPERIMENTS.values():
        entry.Config(**entry.smoke)
        entry.Config()
    for entry in resolving:
        entry.Config(clip_weights=str(folder))
    assert touched == []
    monkeypatch.setattr(os, "stat", real_stat)
    monkeypatch.setattr(builtins, "open", real_open)
    for entry in resolving:
        with pytest.raises(DL1Error, match=f"folder without {MINI_WEIGHTS}"):
            experiments.make_config(entry.name, ["--clip_weights", str(folder)])
    for entry in resolving:
        monkeypatch.setattr(entry, "resolve", lambda cfg: pytest.fail("resolve ran for --help"))
        assert main(["run", entry.name, "--clip_weights", str(folder), "--help"]) == 0
