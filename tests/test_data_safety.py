"""No code runs from a dataset or weights file, and every bad file is one line with exit status 1.

The hostile files carry a ``__reduce__`` payload that creates a marker file when a plain ``pickle.load`` reads it
(checked first, so the test can fail); dl1 must refuse them and the marker must not exist afterwards.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dl1.data import fake, idx, vision
from dl1.data.safe_pickle import load_pickle
from dl1.errors import DL1Error


class Payload:
    """Unpickled by plain pickle, this opens (creates) ``marker`` for writing."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _hostile_batch(marker: Path, n: int = 4, labels_key: str = "labels") -> dict:
    return {"batch_label": "training batch 1 of 5", labels_key: [0] * n, "data": np.zeros((n, 3072), np.uint8),
            "filenames": [Payload(marker)]}


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def _dl1(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dl1", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_the_payload_runs_under_plain_pickle(tmp_path):
    """The fixture is real: plain pickle.load creates the marker (so its absence below means something)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_hostile_batch(marker), protocol=2))
    assert marker.exists()


# -- CIFAR pickles ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, file", [("cifar10", "data_batch_1"), ("cifar10", "test_batch"),
                                        ("cifar10", "batches.meta"), ("cifar100", "train"), ("cifar100", "meta")])
def test_cifar_file_with_a_payload_is_refused_and_never_run(tmp_path, name, file):
    folder = fake.write_cifar(tmp_path / "data", name, n_train=10, n_test=5)
    marker = tmp_path / "ran"
    key = "labels" if name == "cifar10" else "fine_labels"
    with open(folder / file, "wb") as fh:
        pickle.dump(_hostile_batch(marker, labels_key=key), fh, protocol=2)
    with pytest.raises(DL1Error) as err:
        vision.load_arrays(name, tmp_path / "data", val_size=2)
    msg = _one_line_error(err)
    assert "refused" in msg and "io.open" in msg and file in msg
    assert not marker.exists()


def test_payload_through_dl1_run_is_exit_1_one_line_and_no_run_folder(tmp_path):
    folder = fake.write_cifar(tmp_path / "data", "cifar10", n_train=10, n_test=5)
    marker = tmp_path / "ran"
    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump(_hostile_batch(marker), fh, protocol=2)
    proc = _dl1("run", "mlp-numpy", "--dataset", "cifar10", "--data_dir", str(tmp_path / "data"), "--epochs", "1",
                "--batch_size", "2", "--out_dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "refused" in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "runs").exists() or not any(p.is_dir() for p in (tmp_path / "runs").rglob("*"))


class _Python2Pickler(pickle._Pickler):
    """What Python 2's cPickle wrote at protocol 2 (the real CIFAR files): str and bytes as BINSTRING, NumPy arrays
    through ``numpy.core.multiarray._reconstruct``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        head = pickle.SHORT_BINSTRING + bytes([len(raw)]) if len(raw) < 256 else \
            pickle.BINSTRING + struct.pack("<i", len(raw))
        self.write(head + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None) -> None:
        module = "numpy.core.multiarray" if getattr(obj, "__name__", "") == "_reconstruct" else obj.__module__
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def test_python2_pickles_as_in_the_original_files_load(tmp_path):
    folder = fake.write_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    before = vision.get_dataset("cifar10", "train", tmp_path)
    for f in ("data_batch_1", "batches.meta"):
        obj = pickle.loads((folder / f).read_bytes())
        with open(folder / f, "wb") as fh:
            _Python2Pickler(fh, protocol=2).dump(obj)
    assert b"numpy.core.multiarray" in (folder / "data_batch_1").read_bytes()
    after = vision.get_dataset("cifar10", "train", tmp_path)
    np.testing.assert_array_equal(before.data, after.data)
    assert before.targets == after.targets and after.classes == fake.CIFAR10_CLASSES


def test_only_plain_containers_and_numeric_arrays_are_admitted(tmp_path):
    path = tmp_path / "x.pkl"
    for ok in ({"a": [1, 2.5, None, True], b"k": (b"raw", "text")}, np.arange(6, dtype=np.float32).reshape(2, 3)):
        path.write_bytes(pickle.dumps(ok, protocol=2))
        loaded = load_pickle(path)
        assert np.array_equal(loaded, ok) if isinstance(ok, np.ndarray) else loaded == ok
    for bad, named in ((np.array([1, "x"], dtype=object), "numpy.dtype('O"), ({1, 2}, "__builtin__.set"),
                       (Path("p"), "pathlib")):
        path.write_bytes(pickle.dumps(bad, protocol=2))
        with pytest.raises(DL1Error, match="refused") as err:
            load_pickle(path)
        assert named in _one_line_error(err)


def test_a_batch_of_the_wrong_shape_is_one_line(tmp_path):
    folder = fake.write_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    for entry, why in (({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, "shape"),
                       ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, "labels"),
                       ([1, 2, 3], "shape")):
        (folder / "test_batch").write_bytes(pickle.dumps(entry, protocol=2))
        with pytest.raises(DL1Error, match="not a CIFAR batch") as err:
            vision.get_dataset("cifar10", "test", tmp_path)
        assert why in _one_line_error(err)


# -- IDX files and their gzip archives ---------------------------------------------------------------------------------
def _rewrite(path: Path, edit) -> None:
    path.write_bytes(edit(bytearray(path.read_bytes())))


def _set(offset: int, value: int):
    def edit(b: bytearray) -> bytes:
        b[offset] = value
        return bytes(b)
    return edit


@pytest.mark.parametrize("file, edit, expected", [
    ("train-images-idx3-ubyte", _set(0, 0x1F), "magic number 1f 00 08 03"),
    ("train-images-idx3-ubyte", _set(2, 0x0D), "expected 00 00 08 03"),  # float32 elements
    ("t10k-labels-idx1-ubyte", _set(3, 0x02), "expected 00 00 08 01"),
    ("train-images-idx3-ubyte", lambda b: bytes(b[:-7]), "truncated"),
    ("t10k-labels-idx1-ubyte", lambda b: bytes(b[:8]) + bytes([12]) * (len(b) - 8), "label 12"),
    ("t10k-labels-idx1-ubyte", lambda b: bytes(b[:7]) + bytes([b[7] + 1]) + bytes(b[8:]) + b"\0", "labels for"),
])
def test_bad_idx_files_are_one_line(tmp_path, file, edit, expected):
    raw = fake.write_idx(tmp_path, "mnist", n_train=10, n_test=5)
    _rewrite(raw / file, edit)
    with pytest.raises(DL1Error) as err:
        vision.load_arrays("mnist", tmp_path, val_size=2)
    msg = _one_line_error(err)
    assert expected in msg and file in msg


def test_bad_idx_through_dl1_run_is_exit_1_without_a_run_folder(tmp_path):
    raw = fake.write_idx(tmp_path / "data", "mnist", n_train=10, n_test=5)
    _rewrite(raw / "train-images-idx3-ubyte", _set(2, 0x0D))
    proc = _dl1("run", "mlp-numpy", "--dataset", "mnist", "--data_dir", str(tmp_path / "data"), "--epochs", "1",
                "--out_dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "magic number" in proc.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("damage", ["not gzip", "flipped", "truncated"])
def test_corrupt_gzip_is_one_line_and_leaves_no_partial_file(tmp_path, damage):
    raw = fake.write_idx(tmp_path, "fashion-mnist", n_train=10, n_test=5, gz=True)
    gz = raw / "train-images-idx3-ubyte.gz"
    data = bytearray(gz.read_bytes())
    if damage == "not gzip":
        data = bytearray(b"<html>404</html>" * 10)
    elif damage == "flipped":
        data[len(data) // 2] ^= 0xFF  # inside the deflate stream: a zlib or CRC error
    else:
        data = data[:60]
    gz.write_bytes(bytes(data))
    with pytest.raises(DL1Error, match="cannot decompress") as err:
        vision.load_arrays("fashion-mnist", tmp_path, val_size=2)
    assert "train-images-idx3-ubyte.gz" in _one_line_error(err)
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert not list(raw.glob(".*tmp")), list(raw.iterdir())


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    raw = fake.write_idx(tmp_path, "mnist", n_train=10, n_test=5)
    (raw / "train-images-idx3-ubyte").unlink()
    with gzip.open(raw / "train-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(bytes(4096))
    monkeypatch.setattr(idx, "MAX_DECOMPRESSED", 1024)
    with pytest.raises(DL1Error, match="more than"):
        vision.prepare("mnist", tmp_path)
    assert not (raw / "train-images-idx3-ubyte").exists() and not list(raw.glob(".*tmp"))


# -- weight files ----------------------------------------------------------------------------------------------------
def _hostile_weights(path: Path, marker: Path) -> Path:
    torch.save({"conv1.weight": torch.zeros(1), "fc.note": Payload(marker)}, path)
    return path


def test_hostile_weights_file_is_refused_in_one_line(tmp_path):
    from dl1.hub.torchvision import resnet18_state_dict

    marker = tmp_path / "ran"
    path = _hostile_weights(tmp_path / "r18.pth", marker)
    with pytest.raises(DL1Error) as err:
        resnet18_state_dict(str(path))
    msg = _one_line_error(err)
    assert "--weights" in msg and str(path) in msg and "weights_only=False" not in msg
    assert not marker.exists()
    (tmp_path / "cut.pth").write_bytes((tmp_path / "r18.pth").read_bytes()[:300])
    with pytest.raises(DL1Error, match="cannot read") as err:
        resnet18_state_dict(str(tmp_path / "cut.pth"))
    _one_line_error(err)


def test_hostile_file_in_the_torch_hub_cache_is_refused(tmp_path, monkeypatch):
    """torchvision would unpickle its cached file without weights_only; dl1 reads it itself."""
    from dl1.hub import torchvision as tv_hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv("DL1_OFFLINE", "1")
    marker = tmp_path / "ran"
    tv_hub.weights_file().parent.mkdir(parents=True)
    _hostile_weights(tv_hub.weights_file(), marker)
    with pytest.raises(DL1Error, match="ResNet-18 ImageNet weights") as err:
        tv_hub.resnet18_state_dict("imagenet")
    _one_line_error(err)
    assert not marker.exists()


def test_wrong_state_dict_names_the_file_and_the_first_bad_key(tmp_path):
    from dl1.hub.torchvision import resnet18_state_dict
    from dl1.models.resnet_probe import build_resnet18

    state = build_resnet18().state_dict()
    state["fc.weight"] = torch.zeros(10, 512)
    torch.save(state, tmp_path / "ten.pth")
    with pytest.raises(DL1Error, match=r"'fc.weight' has shape \(10, 512\), expected \(1000, 512\)") as err:
        resnet18_state_dict(str(tmp_path / "ten.pth"))
    assert "ten.pth" in _one_line_error(err)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(DL1Error, match="not a dict of tensors"):
        resnet18_state_dict(str(tmp_path / "list.pth"))


def test_hostile_weights_through_dl1_run_is_exit_1(tmp_path):
    marker = tmp_path / "ran"
    path = _hostile_weights(tmp_path / "r18.pth", marker)
    proc = _dl1("run", "resnet-transfer", "--smoke", "--weights", str(path), "--out_dir", str(tmp_path / "runs"),
                cwd=tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "weights_only=False" not in proc.stderr and not marker.exists()
    assert not (tmp_path / "runs").exists() or not any(p.is_dir() for p in (tmp_path / "runs").rglob("*"))


def test_a_failed_npz_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    import errno

    from dl1.data.files import save_npz

    path = save_npz(tmp_path / "best.npz", epoch=1, w=np.ones(3))

    def disk_full(fh, **arrays):
        fh.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(DL1Error, match="No space left on device.*|previous file is kept") as err:
        save_npz(path, epoch=2, w=np.zeros(3))
    _one_line_error(err)
    monkeypatch.undo()
    with np.load(path, allow_pickle=False) as kept:
        assert int(kept["epoch"]) == 1 and kept["w"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["best.npz"]
