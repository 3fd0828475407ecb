"""dl1's mini-CLIP on disk: load (with the weights' SHA-256 checked against the config beside them), save, and the
cache of ``dl1 run mini-clip --cache_dir``.

A cache entry is a folder named by the hash of the training settings, holding the two files of a mini-clip run and
``content.json``: the SHA-256 of each.  Every use checks both: an entry whose weights, mean, std or class names were
edited (same shapes or not) is refused with one line naming the folder, never used; an entry without a content hash
(an older dl1's) is trained anew and replaced, with a note.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn

from dl1.errors import DL1Error, first_line
from dl1.hub.clip.mini import MINI_CONFIG, MINI_FORMAT, MINI_WEIGHTS, read_json_file, read_mini_config
from dl1.hub.clip.names import MINI_ARCH
from dl1.hub.clip.weights import fit_state, is_torchscript, read_weights
from dl1.models.clip import ClipBundle, build_mini_clip, freeze
from dl1.run.files import write_atomic, write_json

CONTENT = "content.json"  # a cache entry's SHA-256 of its weights and config
CACHE_FORMAT = "dl1-mini-clip-cache"


def sha256_file(path: str | Path) -> str:
    """The SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_weights_hash(weights: str | Path, config: dict[str, Any]) -> None:
    """The weights file is the one its config was written for (``weights_sha256``; configs written before dl1
    stored it are not checked); else one line."""
    want = config.get("weights_sha256")
    if want is not None and sha256_file(weights) != want:
        raise DL1Error(f"{weights} is not the file its model config {MINI_CONFIG} was written for (its SHA-256 "
                       f"differs from weights_sha256): the weights were changed after training; retrain with "
                       f"`dl1 run mini-clip`")


def load_mini_clip(weights: str | Path, device: str | torch.device = "cpu") -> ClipBundle:
    """The mini-CLIP of ``weights`` (safetensors, or a state dict read with ``weights_only=True``; never a
    TorchScript archive) built from the checked config beside it: frozen, eval mode, float32, on ``device``."""
    config = read_mini_config(weights)
    if is_torchscript(weights):
        raise DL1Error(f"{weights}: a mini-CLIP is a safetensors file, not a TorchScript archive")
    check_weights_hash(weights, config)
    state, kind = read_weights(weights)
    prep = config["preprocess"]
    bundle = build_mini_clip(config["model"], prep["mean"], prep["std"])
    fit_state(bundle.model, state, str(weights), MINI_ARCH)
    bundle.model = freeze(bundle.model, device)
    bundle.weights = str(weights)
    vision = config["model"]["vision_cfg"]
    bundle.info = {"weights_format": kind, "mini_clip": {
        "image_size": vision["image_size"], "patch_size": vision["patch_size"], "width": vision["width"],
        "layers": vision["layers"], "trained_on": config.get("trained_on")}}
    return bundle


def save_mini_clip(model: nn.Module, config: dict[str, Any], folder: str | Path) -> Path:
    """Write ``folder/mini_clip.safetensors`` and, beside it, ``mini_clip.json`` (``config`` plus the format marker
    and the weights' SHA-256), each atomically, the config last: a folder with the config holds complete weights.
    Returns the weights file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = save(state)
    path = write_atomic(folder / MINI_WEIGHTS, lambda fh: fh.write(data))
    write_json(folder / MINI_CONFIG, {"format": MINI_FORMAT, "version": 1, **config,
                                      "weights_sha256": hashlib.sha256(data).hexdigest()})
    check_weights_hash(path, read_mini_config(path))  # what was written reads back
    return path


# -- the cache of dl1 run mini-clip --cache_dir ----------------------------------------------------------------------
def mini_cache_entry(cache_dir: str | Path, settings: dict[str, Any]) -> Path:
    """The folder of ``cache_dir`` that holds the mini-CLIP trained with ``settings`` (named by their hash)."""
    key = hashlib.sha256(json.dumps({"format": MINI_FORMAT, **settings}, sort_keys=True).encode()).hexdigest()
    return Path(cache_dir) / f"mini-clip-{key[:16]}"


def _content(files: dict[str, bytes]) -> dict[str, Any]:
    return {"format": CACHE_FORMAT, "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}


def _read_entry(entry: Path) -> dict[str, bytes] | None:
    """The two files of a cache entry, checked against its content hash; None when the entry has no content hash
    (written by an older dl1: trained anew, with a note); a changed entry is one line naming it."""
    content = entry / CONTENT
    if not content.is_file():
        print(f"note: the mini-CLIP cache {entry} has no content hash (an older dl1 wrote it): training anew and "
              f"replacing it", file=sys.stderr, flush=True)
        return None
    stored = read_json_file(content, "mini-CLIP cache content hash")
    try:
        files = {name: (entry / name).read_bytes() for name in (MINI_WEIGHTS, MINI_CONFIG)}
    except OSError as exc:
        raise DL1Error(f"cannot read the mini-CLIP cache {entry}: {first_line(exc)}") from None
    if stored != _content(files):
        changed = [n for n in files if not isinstance(stored, dict) or not isinstance(stored.get("sha256"), dict)
                   or stored["sha256"].get(n) != _content(files)["sha256"][n]] or [CONTENT]
        raise DL1Error(f"the mini-CLIP cache {entry} was changed after it was written ({', '.join(changed)} does not "
                       f"match its content hash in {CONTENT}); delete that folder to train anew")
    return files


def cached_mini_clip(cache_dir: str | Path, settings: dict[str, Any], run_dir: str | Path) -> Path | None:
    """The cached mini-CLIP trained with exactly ``settings``, written into ``run_dir`` (weights, then config: the
    bytes whose hash was checked); None when the cache has none.  A changed entry is refused (one line)."""
    entry = mini_cache_entry(cache_dir, settings)
    if not (entry / MINI_WEIGHTS).is_file() or not (entry / MINI_CONFIG).is_file():
        return None
    files = _read_entry(entry)
    if files is None:
        return None
    try:
        stored = read_mini_config(entry / MINI_WEIGHTS).get("trained_on", {}).get("settings")
    except DL1Error:
        return None
    if stored != json.loads(json.dumps(settings)):
        return None
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():  # the config last: a folder with the config holds complete weights
        write_atomic(run_dir / name, lambda fh, data=data: fh.write(data))
    return run_dir / MINI_WEIGHTS


def store_mini_clip(cache_dir: str | Path, settings: dict[str, Any], run_dir: str | Path) -> Path:
    """Copy the mini-CLIP of ``run_dir`` into the cache entry of ``settings``, with its content hash (a complete
    folder appears at once: written beside it, then renamed); returns the entry."""
    entry = mini_cache_entry(cache_dir, settings)
    tmp = entry.with_name(f".{entry.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        files = {name: (Path(run_dir) / name).read_bytes() for name in (MINI_WEIGHTS, MINI_CONFIG)}
        tmp.mkdir(parents=True)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        write_json(tmp / CONTENT, _content(files))
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DL1Error(f"cannot write the mini-CLIP cache {entry}: {first_line(exc)}") from None
    return entry
