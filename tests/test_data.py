"""The data layer reads the real on-disk formats, splits like random_split, and fails fast and clearly offline."""


import numpy as np
import pytest
import torch

from dl1.data import fake, vision
from dl1.data.loaders import TensorBatches
from dl1.errors import DL1Error


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_files_load(tmp_path, name):
    fake.write_cifar(tmp_path, name, n_train=30, n_test=10)
    arrays = vision.load_arrays(name, tmp_path, val_size=5, seed=42)
    assert arrays.x_train.shape == (25, 3, 32, 32) and arrays.x_val.shape == (5, 3, 32, 32)
    assert arrays.x_test.shape == (10, 3, 32, 32) and arrays.x_train.dtype == np.float32
    assert arrays.n_classes == (10 if name == "cifar10" else 100)
    ds = vision.get_dataset(name, "test", tmp_path)
    img, label = ds[0]
    assert img.size == (32, 32) and 0 <= label < arrays.n_classes


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_load(tmp_path, gz):
    fake.write_idx(tmp_path, "mnist", n_train=40, n_test=10, gz=gz)
    arrays = vision.load_arrays("mnist", tmp_path, val_size=10, seed=1, dtype="uint8")
    assert arrays.x_train.shape == (30, 1, 28, 28) and arrays.x_train.dtype == np.uint8


def test_normalisation_matches_torchvision(tmp_path):
    import torchvision.transforms as T

    fake.write_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    info = vision.DATASETS["cifar10"]
    ds = vision.get_dataset("cifar10", "test", tmp_path,
                            transform=T.Compose([T.ToTensor(), T.Normalize(info.mean, info.std)]))
    arrays = vision.load_arrays("cifar10", tmp_path, val_size=2)
    np.testing.assert_allclose(arrays.x_test[3], ds[3][0].numpy(), atol=1e-5)


def test_split_matches_random_split():
    tr, va = vision.split_indices(100, 20, seed=42)
    a, b = torch.utils.data.random_split(range(100), [80, 20], generator=torch.Generator().manual_seed(42))
    assert list(tr) == list(a.indices) and list(va) == list(b.indices)


def test_missing_dataset_offline_is_fast_and_clear(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("DL1_OFFLINE", "1")
    with pytest.raises(DL1Error) as err:
        vision.load_arrays("cifar10", tmp_path / "empty")
    assert no_network == []  # no download attempt
    msg = str(err.value)
    assert "\n" not in msg and "cifar-10-batches-py" in msg and "cifar-10-python.tar.gz" in msg


def test_corrupt_file_is_reported(tmp_path):
    d = fake.write_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    (d / "data_batch_3").write_bytes((d / "data_batch_3").read_bytes()[:100])  # truncated
    with pytest.raises(DL1Error, match="truncated or corrupt"):
        vision.load_arrays("cifar10", tmp_path)


def test_truncated_gzip_idx_is_reported(tmp_path):
    raw = fake.write_idx(tmp_path, "fashion-mnist", n_train=10, n_test=5, gz=True)
    gz = raw / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:50])
    with pytest.raises(DL1Error, match="corrupt"):
        vision.load_arrays("fashion-mnist", tmp_path, val_size=2)


def test_unreachable_host_is_given_up_quickly(monkeypatch, no_network):
    """Without DL1_OFFLINE the probe tries once; a refused connection means offline, and the message follows."""
    from dl1.hub import online

    monkeypatch.setenv("DL1_OFFLINE", "0")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    assert online("https://www.cs.toronto.edu/~kriz/x.tar.gz") is False
    assert len(no_network) == 1 and "www.cs.toronto.edu" in str(no_network[0])


def test_system_fashion_mnist_is_used(tmp_path, monkeypatch):
    """Debian's re-gzipped files are copied into torchvision's raw/ layout and loaded without download."""
    sysdir = tmp_path / "sys"
    raw = fake.write_idx(tmp_path / "src", "fashion-mnist", n_train=20, n_test=6, gz=True)
    sysdir.mkdir()
    for f in raw.iterdir():
        (sysdir / f.name).write_bytes(f.read_bytes())
    info = vision.DATASETS["fashion-mnist"]
    monkeypatch.setitem(vision.DATASETS, "fashion-mnist",
                        vision.DatasetInfo(**{**info.__dict__, "system_dirs": (str(sysdir),)}))
    monkeypatch.setenv("DL1_OFFLINE", "1")
    arrays = vision.load_arrays("fashion-mnist", tmp_path / "data", val_size=4)
    assert arrays.x_test.shape == (6, 1, 28, 28)
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").exists()


def test_noise_is_additive_gaussian():
    torch.manual_seed(0)
    x = torch.zeros(3, 64, 64)
    y = vision.AddGaussianNoise(std=0.1)(x)
    assert abs(y.std().item() - 0.1) < 0.01 and abs(y.mean().item()) < 0.01


def test_tensor_batches_deterministic_per_epoch_and_sharded():
    x = torch.arange(10)
    a = [b[0].tolist() for b in TensorBatches(x, batch_size=4, shuffle=True, seed=3, epoch=1)]
    b = [b[0].tolist() for b in TensorBatches(x, batch_size=4, shuffle=True, seed=3, epoch=1)]
    c = [b[0].tolist() for b in TensorBatches(x, batch_size=4, shuffle=True, seed=3, epoch=2)]
    assert a == b and a != c and sorted(sum(a, [])) == list(range(10))
    r0 = sum((b[0].tolist() for b in TensorBatches(x, batch_size=2, shuffle=True, seed=3, rank=0, world_size=2)), [])
    r1 = sum((b[0].tolist() for b in TensorBatches(x, batch_size=2, shuffle=True, seed=3, rank=1, world_size=2)), [])
    assert not set(r0) & set(r1) and len(r0) == len(r1) == 5
