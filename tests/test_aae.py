"""Adversarial autoencoder: shapes, output range, the course's zero-parameter values, the generator-loss direction,
optimiser isolation of the two update steps, figures from the run folder, and smoke runs on fake IDX files."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dl1.data.images import class_cycle_indices as fixed_test_indices
from dl1.experiments import execute
from dl1.experiments.aae import Config
from dl1.experiments.runners.aae import build, make_train_step, scale, snapshot_epochs
from dl1.models.aae import AdversarialAE, ConvDecoder, ConvEncoder, Discriminator

LN2 = math.log(2.0)


def zero_model(z_dim: int = 10) -> AdversarialAE:
    model = AdversarialAE(z_dim=z_dim)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


# -- the course's unit tests (part2/unittests.py) ------------------------------------------------------------------
def test_encoder_decoder_discriminator_shapes():
    model = AdversarialAE(z_dim=10)
    assert model.encoder(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    assert model.decoder(torch.randn(4, 10)).shape == (4, 1, 28, 28)
    assert model.discriminator(torch.randn(128, 10)).shape == (128, 1)
    recon, z = model(torch.randn(3, 1, 28, 28))
    assert recon.shape == (3, 1, 28, 28) and z.shape == (3, 10)
    assert model.sample(5).shape == (5, 1, 28, 28)


def test_decoder_output_in_range_and_discriminator_gives_logits():
    torch.manual_seed(1)
    out = ConvDecoder(z_dim=10)(50 * torch.randn(128, 10))
    assert out.min() >= -1 and out.max() <= 1
    assert out.min() < -0.5 and out.max() > 0.5  # Tanh is used, not a clamp to a constant
    logits = Discriminator(10)(5 * torch.randn(256, 10))
    assert logits.min() < 0 < logits.max() or (logits.abs() > 1).any()  # raw logits, not probabilities in (0, 1)
    assert isinstance(ConvEncoder(3).net[-1], torch.nn.Linear)  # deterministic, no activation on the code


def test_zero_parameters_generator_loss_is_ln2():
    model = zero_model()
    x = torch.zeros(4, 1, 28, 28)
    recon, z = model(x)
    loss, parts = model.get_loss_autoencoder(x, recon, z, lambda_=0)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(-math.log(0.5), abs=1e-4)
    assert parts["gen_loss"].item() == pytest.approx(LN2, abs=1e-4) and parts["recon_loss"].item() == 0
    loss.backward()
    assert next(model.encoder.parameters()).grad is not None


def test_zero_parameters_lambda_one_is_reconstruction_only():
    model = zero_model()
    x = torch.zeros(4, 1, 28, 28)
    recon, z = model(x)
    loss, _ = model.get_loss_autoencoder(x, recon, z, lambda_=1)
    assert loss.item() == pytest.approx(0.0, abs=1e-4)
    loss.backward()
    assert next(model.encoder.parameters()).grad is not None
    # with non-zero data, lambda_ = 1 gives exactly the MSE, whatever the discriminator says
    torch.manual_seed(0)
    model = AdversarialAE(z_dim=4)
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    recon, z = model(x)
    loss, parts = model.get_loss_autoencoder(x, recon, z, lambda_=1)
    assert torch.allclose(loss, ((x - recon) ** 2).mean())
    assert loss.item() == pytest.approx(parts["recon_loss"].item())


def test_zero_parameters_discriminator_loss_is_ln2_as_mean():
    model = zero_model()
    z = torch.zeros(4, 10)
    loss, parts = model.get_loss_discriminator(z)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(LN2, abs=1e-4)  # a mean of the two BCE terms (a sum would be 2 ln 2)
    assert set(parts) >= {"disc_loss", "loss_real", "loss_fake", "accuracy"}
    loss.backward()
    assert next(model.discriminator.parameters()).grad is not None


# -- beyond the course's tests -------------------------------------------------------------------------------------
def test_losses_match_reference_formulas():
    torch.manual_seed(3)
    model = AdversarialAE(z_dim=5)
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    recon, z = model(x)
    lam = 0.7
    loss, parts = model.get_loss_autoencoder(x, recon, z, lambda_=lam)
    p_real = torch.sigmoid(model.discriminator(z))
    gen = -torch.log(p_real).mean()
    assert torch.allclose(parts["gen_loss"], gen, atol=1e-6)
    assert torch.allclose(loss, lam * ((x - recon) ** 2).mean() + (1 - lam) * gen, atol=1e-6)

    torch.manual_seed(5)
    d_loss, d_parts = model.get_loss_discriminator(z)
    torch.manual_seed(5)
    z_real = torch.randn_like(z)
    lr_, lf_ = model.discriminator(z_real), model.discriminator(z)
    # -log s(a) = softplus(-a); -log(1 - s(a)) = softplus(a)
    ref = 0.5 * (F.softplus(-lr_).mean() + F.softplus(lf_).mean())
    assert torch.allclose(d_loss, ref, atol=1e-6)
    acc = ((lr_ > 0).float().sum() + (lf_ < 0).float().sum()) / (2 * len(z))
    assert d_parts["accuracy"].item() == pytest.approx(acc.item())


def test_discriminator_accuracy_extremes():
    model = AdversarialAE(z_dim=2)
    with torch.no_grad():
        for p in model.discriminator.parameters():
            p.zero_()
        model.discriminator.net[-1].bias.fill_(5.0)  # says "real" for everything
    _, parts = model.get_loss_discriminator(torch.zeros(10, 2))
    assert parts["accuracy"].item() == pytest.approx(0.5)
    assert parts["loss_real"].item() < 0.01 and parts["loss_fake"].item() > 4.9


def test_generator_step_makes_codes_look_more_real():
    """The pitfall: the generator loss must push D(E(x)) towards "real" (up), not down."""
    torch.manual_seed(0)
    model = AdversarialAE(z_dim=4, num_filters=4)
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    opt = torch.optim.SGD(model.autoencoder_parameters(), lr=0.05)
    before = model.discriminator(model.encoder(x)).mean().item()
    for _ in range(3):
        recon, z = model(x)
        loss, _ = model.get_loss_autoencoder(x, recon, z, lambda_=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.discriminator(model.encoder(x)).mean().item()
    assert after > before
    # per code: the loss gradient points against the discriminator's gradient (moving z downhill raises D(z))
    z = torch.randn(6, 4, requires_grad=True)
    recon = model.decoder(z)
    loss, _ = model.get_loss_autoencoder(recon.detach(), recon, z, lambda_=0.0)
    g_loss = torch.autograd.grad(loss, z)[0]
    g_d = torch.autograd.grad(model.discriminator(z).sum(), z)[0]
    assert ((g_loss * g_d).sum(1) < 0).all()


def test_gradients_reach_the_right_networks_only():
    torch.manual_seed(0)
    model = AdversarialAE(z_dim=3, num_filters=4)
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    recon, z = model(x)
    d_loss, _ = model.get_loss_discriminator(z)
    d_loss.backward()
    assert all(p.grad is None for p in model.autoencoder_parameters())  # codes are detached
    assert all(p.grad is not None for p in model.discriminator.parameters())


class _FakeRun:
    experiment, enabled = "aae-test", False

    def __init__(self, tmp_path):
        from pathlib import Path

        self.checkpoints = Path(tmp_path)
        self.dir = Path(tmp_path)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def test_each_update_changes_only_its_own_network(tmp_path):
    """One training batch through the Trainer: the AE step leaves D unchanged, the D step leaves E and G unchanged."""
    from dl1.train import Trainer

    torch.manual_seed(0)
    cfg = Config(z_dim=4, num_filters=4, lambda_=0.5, d_lr=0.1)
    model, optimizers = build(cfg, torch.device("cpu"))
    trainer = Trainer(_FakeRun(tmp_path), {"model": model}, optimizers, epochs=1, monitor=None)
    assert not {id(p) for p in optimizers["ae"].param_groups[0]["params"]} & \
        {id(p) for p in optimizers["disc"].param_groups[0]["params"]}

    calls, seen = [], {}
    original, original_disc_loss = trainer.backward_step, model.get_loss_discriminator

    def spy(loss, name=None, parameters=None):
        before = {n: _snapshot(getattr(model, n)) for n in ("encoder", "decoder", "discriminator")}
        disc_before = copy.deepcopy(model.discriminator)
        original(loss, name, parameters)
        calls.append((name, {n for n in before if _changed(before[n], getattr(model, n))}))
        if name == "disc":  # the D update used the gradient of the D loss alone (no leftover from the AE step)
            torch.set_rng_state(seen["rng"])
            z = seen["z"]
            real, fake = disc_before(torch.randn_like(z)), disc_before(z)
            ref = 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                         + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
            for g, p in zip(torch.autograd.grad(ref, list(disc_before.parameters())), model.discriminator.parameters()):
                assert torch.allclose(p.grad, g, atol=1e-6)

    def record_disc_loss(z_fake, z_real=None, discriminator=None):
        assert z_real is None  # make_train_step without PriorDraws: fresh draws from the random stream
        assert discriminator is model.discriminator  # one process: trainer.wrap gives the module itself
        seen.update(rng=torch.get_rng_state(), z=z_fake.detach().clone())
        return original_disc_loss(z_fake)

    trainer.backward_step = spy
    model.get_loss_discriminator = record_disc_loss
    step = make_train_step(model, trainer, cfg.lambda_)
    batch = (torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8),)
    for _ in range(2):  # second batch: leftover discriminator grads of the AE step must not leak anywhere
        metrics = step(batch)
    assert calls == [("ae", {"encoder", "decoder"}), ("disc", {"discriminator"})] * 2
    assert {"recon_loss", "gen_loss", "ae_loss", "disc_loss", "disc_accuracy"} <= set(metrics)


def test_helpers():
    assert torch.equal(scale(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))
    assert snapshot_epochs(12, 5) == {0, 1, 5, 10, 12} and snapshot_epochs(3, 0) == {0, 1, 3}
    labels = np.array([3, 1, 1, 0, 3, 0, 2])
    assert fixed_test_indices(labels, 5).tolist() == [3, 1, 6, 0, 5]


def test_make_figures_rebuilds_from_run_folder(tmp_path):
    """Figures are functions of the run folder: delete them, rebuild, look at the written files."""
    from dl1.report.aae import grid, make_figures, pair_rows, save_snapshot

    rng = np.random.default_rng(0)
    img = lambda n: rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)  # noqa: E731
    codes, labels = rng.standard_normal((50, 2)).astype(np.float32), rng.integers(0, 10, 50)
    for epoch in (0, 1, 5):
        save_snapshot(tmp_path, epoch, originals=img(8), recon=img(8), samples=img(16), codes=codes, labels=labels)
    with open(tmp_path / "metrics.jsonl", "w") as fh:
        for e in (1, 5):
            fh.write(json.dumps({"step": e, "split": "train", "epoch": e, "recon_loss": 0.1, "gen_loss": 0.7,
                                 "disc_loss": 0.69, "disc_accuracy": 0.5}) + "\n")
            fh.write(json.dumps({"step": e, "split": "test", "epoch": e, "recon_loss": 0.1,
                                 "disc_accuracy": 0.5}) + "\n")
    written = {p.name for p in make_figures(tmp_path)}
    assert {"aae_curves.png", "aae_reconstructions.png", "aae_samples.png", "aae_latent.png",
            "samples_epoch_0.png", "reconstruction_epoch_5.png"} <= written
    g = grid(pair_rows(img(8), img(8), 4), nrow=4)
    assert g.shape == (4 * 30 + 2, 4 * 30 + 2)


# -- smoke runs -----------------------------------------------------------------------------------------------------
def _idx_test_images(data_dir) -> torch.Tensor:
    """The fake MNIST test images straight from the IDX file (16-byte header), scaled to [-1, 1] here."""
    raw = (data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()
    return torch.from_numpy(np.frombuffer(raw[16:], np.uint8).reshape(-1, 1, 28, 28).astype(np.float32)) / 127.5 - 1


def _test_mse_from_checkpoint(run_dir, data_dir) -> float:
    from dl1.train.checkpoint import load_checkpoint

    config = json.loads((run_dir / "config.json").read_text())
    model = AdversarialAE(config["z_dim"], num_filters=config["num_filters"])
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt")["modules"]["model"])
    model.eval()
    x = _idx_test_images(data_dir)
    with torch.no_grad():
        recon, _ = model(x)
    return float(((recon.double() - x.double()) ** 2).mean())


def test_autoencoder_beats_a_constant_output_on_fake_idx_files(tmp_path):
    """A short plain-autoencoder run reconstructs the test images with less than 0.6x the error of the constant
    output 0 (the middle of tanh's range), mean(x^2); an encoder, decoder or loss that does not learn stays above."""
    from dl1.data.fake import write_idx

    write_idx(tmp_path / "data", "mnist", n_train=48, n_test=24)
    s = execute("aae", ["--dataset", "mnist", "--data_dir", str(tmp_path / "data"), "--z_dim", "2", "--epochs", "8",
                        "--batch_size", "16", "--num_filters", "8", "--ae_lr", "0.003", "--lambda_", "1",
                        "--n_images", "8", "--save_every", "0"], out_dir=tmp_path / "runs", quiet=True)
    constant = float((_idx_test_images(tmp_path / "data").double() ** 2).mean())
    assert 0.2 < constant < 0.4  # the fake images: class brightness + noise, scaled to [-1, 1]
    assert 0 < s["test"]["recon_loss"] < 0.6 * constant


def test_smoke_run_on_fake_idx_files_and_resume(tmp_path):
    from dl1.data.fake import write_idx

    write_idx(tmp_path / "data", "mnist", n_train=48, n_test=24)

    def argv(epochs: int) -> list[str]:
        return ["--dataset", "mnist", "--data_dir", str(tmp_path / "data"), "--z_dim", "2", "--epochs", str(epochs),
                "--batch_size", "16", "--num_filters", "4", "--n_images", "16", "--save_every", "1"]

    s = execute("aae", argv(2), out_dir=tmp_path / "runs", quiet=True)
    (folder,) = list((tmp_path / "runs" / "aae").iterdir())
    assert s["epochs_run"] == 2 and s["steps"] == 6 and s["n_train"] == 48 and s["n_test"] == 24
    assert not s["synthetic"] and len(s["history"]["disc_accuracy"]) == 2
    # the reported test MSE is the mean over test images and pixels of the last weights' reconstructions in [-1, 1]
    assert s["test"]["recon_loss"] == pytest.approx(_test_mse_from_checkpoint(folder, tmp_path / "data"), rel=1e-5)
    assert s["history"]["test_recon_loss"][1] < s["history"]["test_recon_loss"][0]  # the second epoch improved it
    snaps = sorted(p.name for p in (folder / "snapshots").iterdir())
    assert snaps == ["epoch_000.npz", "epoch_001.npz", "epoch_002.npz"]
    assert (folder / "figures" / "aae_latent.png").exists() and (folder / "checkpoints" / "last.pt").exists()
    with np.load(folder / "snapshots" / "epoch_002.npz", allow_pickle=False) as snap:
        assert snap["codes"].shape == (24, 2) and snap["samples"].shape == (16, 1, 28, 28)

    # a 1-epoch run continued to 2 epochs in its own folder gives the numbers of the uninterrupted 2-epoch run
    short = execute("aae", argv(1), out_dir=tmp_path / "short", quiet=True)
    resumed = execute("aae", [*argv(2), "--resume", short["run_dir"]], out_dir=tmp_path / "short", quiet=True)
    assert resumed["run_dir"] == short["run_dir"] and resumed["steps"] == 6 and resumed["history"]["epoch"] == [1, 2]
    for key in ("test_recon_loss", "train_recon_loss", "disc_accuracy", "gen_loss"):
        assert resumed["history"][key] == pytest.approx(s["history"][key], rel=1e-5), key
    from pathlib import Path

    last = Path("snapshots") / "epoch_002.npz"
    with (np.load(folder / last, allow_pickle=False) as a,
          np.load(Path(resumed["run_dir"]) / last, allow_pickle=False) as b):
        assert np.abs(a["samples"].astype(int) - b["samples"].astype(int)).max() <= 1


def test_cli_smoke_and_bad_flags(tmp_path):
    from dl1.cli import main

    assert main(["run", "aae", "--smoke", "--out_dir", str(tmp_path)]) == 0
    assert main(["run", "aae", "--lambda_", "1.5"]) == 2
    assert main(["run", "aae", "--lamda", "0.5"]) == 2
    assert main(["run", "aae", "--device", "gpu"]) == 2
    assert main(["run", "aae", "--dataset", "mnist", "--data_dir", str(tmp_path / "nothing"), "--epochs", "1"]) == 1


def _bench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "aae.py"
    spec = importlib.util.spec_from_file_location("bench_aae_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_pca_and_table_on_fake_files(tmp_path, capsys):
    from dl1.data.fake import write_idx

    bench = _bench_module()
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((3, 20)).astype(np.float32)
    train = rng.standard_normal((200, 3)).astype(np.float32) @ basis + 0.5
    test = rng.standard_normal((50, 3)).astype(np.float32) @ basis + 0.5
    exact = bench.pca_mse(train, test, 3)
    assert exact["test_mse"] < 1e-9 and exact["explained_variance"] == pytest.approx(1.0)
    low = bench.pca_mse(train, test, 1)
    centred = test - train.mean(0)
    _, vecs = np.linalg.eigh(np.cov(train.T))  # oracle: top eigenvector of the covariance
    v = vecs[:, -1:]
    assert low["test_mse"] == pytest.approx(float(np.mean((centred - centred @ v @ v.T) ** 2)), rel=1e-4)

    write_idx(tmp_path / "data", "fashion-mnist", n_train=40, n_test=16)
    out = tmp_path / "aae.json"
    assert bench.main(["--data_dir", str(tmp_path / "data"), "--epochs", "1", "--lambdas", "1", "--out", str(out),
                       "--figures_dir", str(tmp_path / "figs")]) == 0
    assert {p.name for p in (tmp_path / "figs").iterdir()} == {f"aae_z8_lambda1_{k}.png" for k in
                                                               ("curves", "reconstructions", "samples")}
    res = json.loads(out.read_text())
    (ae,) = res["autoencoders"]
    assert res["n_train"] == 40 and res["n_test"] == 16 and ae["ratio"] == pytest.approx(ae["test_mse"] /
                                                                                         res["pca"]["test_mse"])
    assert isinstance(res["beats_pca"], bool) and "PCA, 8 components" in capsys.readouterr().out


def test_too_big_a_step_is_refused_before_training(tmp_path, monkeypatch):
    import dl1.run.device
    from dl1.errors import DL1Error

    monkeypatch.setattr(dl1.run.device, "available_memory", lambda device: 8 * 2**20)
    with pytest.raises(DL1Error, match=r"^training the AAE .* needs about .* what fits: --batch_size \d+$"):
        execute("aae", ["--batch_size", "512"], smoke=True, out_dir=tmp_path, quiet=True)
    assert not (tmp_path / "aae").exists() or not any((tmp_path / "aae").iterdir())


def test_synthetic_and_real_images_come_as_uint8(tmp_path):
    from dl1.data.fake import write_idx
    from dl1.data.images import cluster_images, first, uint8_images

    a = cluster_images(seed=3)
    assert a.x_train.dtype == np.uint8 and a.x_train.shape == (256, 1, 28, 28) and a.x_test.shape == (64, 1, 28, 28)
    assert np.array_equal(a.x_train, cluster_images(seed=3).x_train)
    write_idx(tmp_path, "mnist", n_train=30, n_test=10)
    real = uint8_images("mnist", tmp_path, val_size=5, seed=0)
    assert real.x_train.shape == (25, 1, 28, 28) and real.x_val.shape == (5, 1, 28, 28)
    assert real.x_test.dtype == np.uint8
    fake = uint8_images("synthetic", None, val_size=16, seed=0, fake_idx_dir=tmp_path / "fake")
    assert len(fake.x_train) + len(fake.x_val) == 96 and len(fake.x_test) == 32
    assert len(first(real.x_test, 4)) == 4 and len(first(real.x_test, 0)) == 10


# -- data parallel and precision ------------------------------------------------------------------------------------
def test_prior_draws_of_the_ranks_together_are_the_draws_of_one_process():
    """Each of N ranks takes rows rank, rank + N, ... (the positions of its items in the global batch) of the same
    draw: together exactly one process's samples; the same (seed, step) draws the same, and the global random stream
    is left alone (a resumed run draws what the uninterrupted one did)."""
    from dl1.models.aae import PriorDraws

    prior = PriorDraws(seed=7, z_dim=3)
    state = torch.get_rng_state()
    whole = prior.draw(5, 12)
    parts = [prior.draw(5, 12, slice(rank, None, 3)) for rank in range(3)]
    assert torch.equal(torch.get_rng_state(), state)
    assert whole.shape == (12, 3) and whole.dtype == torch.float32
    assert torch.equal(torch.stack(parts, 1).reshape(12, 3), whole)
    assert torch.equal(PriorDraws(seed=7, z_dim=3).draw(5, 12), whole)
    assert not torch.equal(prior.draw(6, 12), whole) and not torch.equal(PriorDraws(8, 3).draw(5, 12), whole)


def test_bf16_smoke_trains_like_fp32_and_fp16_needs_cuda(tmp_path):
    from pathlib import Path

    from dl1.cli import main

    runs = {p: execute("aae", ["--precision", p], smoke=True, out_dir=tmp_path / p, quiet=True)
            for p in ("fp32", "bf16")}
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert json.loads((Path(bf16["run_dir"]) / "config.json").read_text())["precision"] == "bf16"
    assert bf16["steps"] == fp32["steps"] and all(math.isfinite(v) for v in bf16["history"]["gen_loss"])
    for key in ("train_recon_loss", "test_recon_loss", "gen_loss"):  # measured: within 0.1 % of fp32
        assert bf16["history"][key] == pytest.approx(fp32["history"][key], rel=0.01), key
    with np.load(Path(bf16["run_dir"]) / "snapshots" / "epoch_002.npz", allow_pickle=False) as snap:
        assert snap["samples"].dtype == np.uint8 and snap["recon"].shape == snap["originals"].shape
    if not torch.cuda.is_available():
        assert main(["run", "aae", "--smoke", "--precision", "fp16", "--out_dir", str(tmp_path / "fp16")]) == 2
        assert not (tmp_path / "fp16" / "aae").exists() or not any((tmp_path / "fp16" / "aae").iterdir())
