"""The mini-CLIP cache and run folder carry content hashes, checked on every use: a cache whose weights, mean or
class names were edited (same shapes) is refused with one line naming the cache folder, never used silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from dl1.errors import DL1Error
from dl1.experiments import execute
from dl1.hub.clip import mini_store
from dl1.hub.clip.mini import MINI_CONFIG, MINI_WEIGHTS
from dl1.models import clip as C

ARGV = ["--prompts", "none", "--no-test_noise"]


@pytest.fixture(scope="module")
def cached(tmp_path_factory) -> tuple[Path, Path]:
    """(cache folder, its one entry) after a smoke mini-clip run trained and stored its model."""
    root = tmp_path_factory.mktemp("cache")
    out = execute("mini-clip", [*ARGV, "--cache_dir", str(root / "cache")], smoke=True, out_dir=root / "runs",
                  quiet=True)
    assert not out["training"]["cached"]
    entry = Path(out["training"]["cache"])
    assert sorted(p.name for p in entry.iterdir()) == sorted([MINI_WEIGHTS, MINI_CONFIG, mini_store.CONTENT])
    return root / "cache", entry


def _edit_tensor(path: Path) -> None:
    state = load_file(str(path))
    name = sorted(state)[0]
    state[name] = state[name] + 0.5  # same shape, same dtype: only the hash can tell
    save_file(state, str(path))


def _edit_config(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


@pytest.mark.parametrize("what", ["a tensor", "the class names", "the mean"])
def test_an_edited_cache_is_refused_naming_its_folder(cached, tmp_path, what):
    cache, entry = cached
    backup = tmp_path / "backup"
    shutil.copytree(entry, backup)
    try:
        if what == "a tensor":
            _edit_tensor(entry / MINI_WEIGHTS)
        elif what == "the class names":
            _edit_config(entry / MINI_CONFIG, lambda d: d["classes"].reverse())
        else:
            _edit_config(entry / MINI_CONFIG, lambda d: d["preprocess"].update(mean=[0.5, 0.5, 0.5]))
        with pytest.raises(DL1Error, match=rf"mini-CLIP cache {entry} was changed .*delete that folder") as info:
            execute("mini-clip", [*ARGV, "--cache_dir", str(cache)], smoke=True, out_dir=tmp_path / "runs",
                    quiet=True)
        assert "\n" not in str(info.value)
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob(MINI_WEIGHTS))  # nothing used
    finally:
        shutil.rmtree(entry)
        shutil.copytree(backup, entry)
    again = execute("mini-clip", [*ARGV, "--cache_dir", str(cache)], smoke=True, out_dir=tmp_path / "ok", quiet=True)
    assert again["training"]["cached"]  # the untouched entry is used


def test_an_entry_without_content_hash_is_trained_anew(cached, tmp_path, capsys):
    _, entry = cached
    settings = json.loads((entry / MINI_CONFIG).read_text())["trained_on"]["settings"]
    old = mini_store.mini_cache_entry(tmp_path / "cache", settings)
    shutil.copytree(entry, old)
    (old / mini_store.CONTENT).unlink()  # as an older dl1 wrote it
    assert mini_store.cached_mini_clip(tmp_path / "cache", settings, tmp_path / "run") is None
    assert "no content hash" in capsys.readouterr().err and not (tmp_path / "run").exists()


def _tiny_mini_clip(folder: Path) -> Path:
    cfg = C.mini_clip_config(image_size=8, patch_size=4, width=8, layers=1, text_width=8, text_layers=1, embed_dim=4)
    bundle = C.build_mini_clip(cfg, seed=0)
    return mini_store.save_mini_clip(bundle.model, {"model": cfg, "preprocess": {"mean": [0.5] * 3,
                                                                                   "std": [0.25] * 3}}, folder)


def test_edited_run_folder_weights_are_refused_by_the_loader(tmp_path):
    weights = _tiny_mini_clip(tmp_path / "run")
    assert json.loads((tmp_path / "run" / MINI_CONFIG).read_text())["weights_sha256"] == \
        mini_store.sha256_file(weights)
    assert mini_store.load_mini_clip(weights).weights == str(weights)
    _edit_tensor(weights)
    with pytest.raises(DL1Error, match="weights_sha256"):
        mini_store.load_mini_clip(weights)
