"""VAE (assignment 3 part 1): KLD, reparameterisation, bpd, shapes, the zero model, the manifold, the experiment."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dl1.losses import KLD, elbo_to_bpd, sample_reparameterize
from dl1.models.vae import VAE, CNNDecoder, CNNEncoder, discretize, fit_pixel_categorical, pixel_categorical_bpd
from dl1.report.generative import manifold_latents, save_image_grid, visualize_manifold


# -- KLD (the course's TestKLD) ---------------------------------------------------------------------------------------
def test_kld_standard_normal_is_zero():
    assert KLD(torch.zeros(1, 1), torch.zeros(1, 1)).item() == 0.0


def test_kld_symmetric_in_the_mean():
    for _ in range(5):
        mean, log_std = torch.randn(16, 4), torch.randn(16, 4)
        assert torch.equal(KLD(mean, log_std), KLD(-mean, log_std))


def test_kld_sums_over_last_dimension():
    mean, log_std = torch.randn(2, 4), torch.randn(2, 4)
    out = KLD(mean, log_std)
    assert out.shape == (2,)
    per_column = sum(KLD(mean[:, i:i + 1], log_std[:, i:i + 1]) for i in range(4))
    torch.testing.assert_close(out, per_column)
    assert KLD(torch.randn(3, 5, 7), torch.randn(3, 5, 7)).shape == (3, 5)


def test_kld_course_numeric_cases():
    assert KLD(torch.full((1, 1), 2.0), torch.zeros(1, 1)).item() == pytest.approx(2.0, abs=1e-5)
    assert KLD(torch.zeros(1, 1), torch.ones(1, 1)).item() == pytest.approx(2.194528, abs=1e-5)


def test_kld_matches_closed_form_of_two_gaussians_in_float64():
    mean, log_std = torch.randn(50, 3, dtype=torch.float64), torch.randn(50, 3, dtype=torch.float64)
    var = torch.exp(2 * log_std)
    expected = (torch.log(1 / torch.sqrt(var)) + (var + mean ** 2) / 2 - 0.5).sum(-1)
    torch.testing.assert_close(KLD(mean, log_std), expected)


# -- reparameterisation -----------------------------------------------------------------------------------------------
def test_reparameterization_gradients_reach_mean_and_std():
    mean = torch.randn(4, 3, requires_grad=True)
    log_std = torch.randn(4, 3, requires_grad=True)
    z = sample_reparameterize(mean, log_std.exp())
    assert z.shape == (4, 3)
    z.sum().backward()
    assert mean.grad is not None and log_std.grad is not None
    torch.testing.assert_close(mean.grad, torch.ones(4, 3))  # dz/dmean = 1
    assert log_std.grad.abs().sum() > 0


def test_reparameterization_sample_statistics():
    for _ in range(10):
        mean, std = torch.randn(1) * 3, torch.rand(1) * 2 + 0.1
        z = sample_reparameterize(mean.expand(20000), std.expand(20000))
        assert abs(z.mean() - mean).item() < 0.1
        assert abs(z.std() - std).item() < 0.1


def test_reparameterization_rejects_negative_std():
    with pytest.raises(ValueError, match="non-negative"):
        sample_reparameterize(torch.zeros(2), torch.tensor([1.0, -0.5]))


# -- bits per dimension -----------------------------------------------------------------------------------------------
def test_bpd_of_a_known_case():
    for _ in range(5):
        shape = (8, *torch.randint(10, 20, (3,)).tolist())
        img = torch.full(shape, 0.5)
        elbo = -torch.log(img).sum(dim=(1, 2, 3))  # per-image NLL in nats of probability 1/2 per dimension
        torch.testing.assert_close(elbo_to_bpd(elbo, shape), torch.ones(8), atol=1e-5, rtol=0)


# -- encoder / decoder ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("z_dim", [2, 7, 20, 39])
def test_encoder_decoder_shapes(z_dim):
    imgs = torch.randint(16, (5, 1, 28, 28))
    mean, log_std = CNNEncoder(z_dim=z_dim, num_filters=8)(imgs)
    assert mean.shape == log_std.shape == (5, z_dim)
    logits = CNNDecoder(z_dim=z_dim, num_filters=8)(torch.randn(5, z_dim))
    assert logits.shape == (5, 16, 28, 28)


def test_encoder_outputs_are_raw_and_decoder_gives_logits():
    torch.manual_seed(1)
    means, log_stds = [], []
    for _ in range(10):
        z_dim = int(torch.randint(2, 40, (1,)))
        mean, log_std = CNNEncoder(z_dim=z_dim)(torch.randint(16, (32, 1, 28, 28)))
        means.append(mean)
        log_stds.append(log_std)
    assert any((m < 0).any() for m in means) and any((m > 0).any() for m in means)
    assert any((s < 0).any() for s in log_stds) and any((s > 0).any() for s in log_stds)
    assert (CNNDecoder(z_dim=20)(torch.randn(64, 20)) < 0).any()


# -- the whole model --------------------------------------------------------------------------------------------------
def test_all_zero_model_gives_784_ln16_kl0_and_4_bpd():
    model = VAE(32, 20, 1e-3)
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    rec, reg, bpd = model(torch.randint(16, (4, 1, 28, 28)))
    assert rec.dim() == reg.dim() == bpd.dim() == 0
    assert rec.item() == pytest.approx(784 * math.log(16), abs=1e-2)
    assert reg.item() == pytest.approx(0.0, abs=1e-5)
    assert bpd.item() == pytest.approx(4.0, abs=1e-5)


def test_forward_works_with_batch_size_one_and_backpropagates():
    model = VAE(num_filters=4, z_dim=3)
    rec, reg, bpd = model(torch.randint(16, (1, 1, 28, 28)))
    bpd.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert bpd.item() == pytest.approx((rec + reg).item() / 784 / math.log(2), rel=1e-6)


def test_given_noise_is_the_reparameterisation_and_ranks_share_the_batch_noise():
    """``forward(x, eps)`` uses ``z = mean + std·eps``; :func:`batch_noise` gives each rank the rows of the one
    global draw that its images have (``rank::world``, as the loader's shard): together the whole draw."""
    from dl1.models.vae import batch_noise

    model = VAE(num_filters=4, z_dim=3)
    x = torch.randint(16, (6, 1, 28, 28))
    eps = torch.randn(6, 3)
    torch.manual_seed(1)
    drawn = model(x)
    torch.manual_seed(1)
    assert torch.equal(model(x, torch.randn(6, 3))[0], drawn[0])  # eps=None draws from the global stream
    assert not torch.equal(model(x, eps)[0], drawn[0]) and torch.equal(model(x, eps)[0], model(x, eps.clone())[0])
    whole = batch_noise(torch.Generator().manual_seed(5), 6, 3)
    assert whole.shape == (6, 3)
    for world in (2, 3):
        parts = [batch_noise(torch.Generator().manual_seed(5), 6 // world, 3, r, world) for r in range(world)]
        assert all(torch.equal(parts[r], whole[r::world]) for r in range(world))


def test_sharded_evaluation_weighted_by_n_is_the_whole_split():
    """Each rank's part of a split, averaged with the images scored as weights, equals the whole split's means:
    every image keeps its noise whichever part scores it."""
    from dl1.experiments.runners.vae import evaluate_split
    from dl1.train.distributed import DistInfo, shard

    model = VAE(num_filters=4, z_dim=2)
    images = torch.randint(16, (23, 1, 28, 28), dtype=torch.uint8)
    whole = evaluate_split(model, images, seed=7, batch_size=5)
    assert whole["n"] == 23 and evaluate_split(model, images, seed=7, batch_size=5) == whole
    parts = [evaluate_split(model, images, seed=7, batch_size=4, part=shard(23, DistInfo(r, 3))) for r in range(3)]
    assert [p["n"] for p in parts] == [7, 8, 8]
    for key in ("bpd", "ELBO", "reconstruction_loss", "regularization_loss"):
        assert sum(p[key] * p["n"] for p in parts) / 23 == pytest.approx(whole[key], rel=1e-6)  # float32 batch means


def test_sample_gives_4bit_images_and_is_reproducible_with_a_generator():
    model = VAE(num_filters=4, z_dim=5)
    a = model.sample(6, generator=torch.Generator().manual_seed(3))
    b = model.sample(6, generator=torch.Generator().manual_seed(3))
    assert a.shape == (6, 1, 28, 28) and a.dtype == torch.long
    assert a.min() >= 0 and a.max() <= 15
    assert torch.equal(a, b)


def test_sample_follows_the_decoder_distribution():
    model = VAE(num_filters=4, z_dim=2)
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    with torch.no_grad():  # the last bias makes value 15 four times as likely as each of the others
        model.decoder.net[-1].bias[15] = math.log(4)
    imgs = model.sample(50)
    assert abs((imgs == 15).float().mean().item() - 4 / 19) < 0.02


# -- data: 4-bit discretisation and the baseline ----------------------------------------------------------------------
def test_discretize_equals_the_course_transform_on_every_byte():
    from torchvision.transforms.functional import to_tensor

    v = torch.arange(256, dtype=torch.uint8)
    course = torch.clamp(torch.floor(16 * to_tensor(v.view(16, 16, 1).numpy())), max=15).long().view(-1)
    assert torch.equal(discretize(v), course)
    assert discretize(v).min() == 0 and discretize(v).max() == 15


def test_pixel_categorical_baseline_matches_direct_count():
    torch.manual_seed(0)
    train = torch.randint(16, (200, 1, 2, 3))
    test = torch.randint(16, (50, 1, 2, 3))
    table = fit_pixel_categorical(train, alpha=1.0)
    assert table.shape == (6, 16)
    flat_tr, flat_te = train.reshape(200, -1), test.reshape(50, -1)
    bits = 0.0
    for p in range(6):
        counts = torch.bincount(flat_tr[:, p], minlength=16).double() + 1
        probs = counts / counts.sum()
        bits += -torch.log2(probs[flat_te[:, p]]).sum().item()
    assert pixel_categorical_bpd(table, test) == pytest.approx(bits / (50 * 6), rel=1e-9)
    uniform = fit_pixel_categorical(torch.arange(16).view(16, 1, 1, 1))
    assert pixel_categorical_bpd(uniform, test[:, :, :1, :1]) == pytest.approx(4.0)


# -- manifold and grids -----------------------------------------------------------------------------------------------
def test_manifold_latents_are_gaussian_percentiles():
    z = manifold_latents(20)
    assert z.shape == (400, 2)
    assert z[0, 0].item() == pytest.approx(-1.959964, abs=1e-5)  # Φ⁻¹(0.5/20) = Φ⁻¹(0.025)
    assert z[0, 1].item() == pytest.approx(-1.959964, abs=1e-5)
    assert z[1, 0] > z[0, 0] and z[1, 1] == z[0, 1]  # the column moves z1
    assert z[20, 1] > z[0, 1] and z[20, 0] == z[0, 0]  # the row moves z2
    torch.testing.assert_close(z[-1], -z[0])
    assert torch.erfinv(torch.tensor(2 * 0.025 - 1)).item() * math.sqrt(2) == pytest.approx(z[0, 0].item(), abs=1e-5)


def test_visualize_manifold_shows_mean_images_in_unit_range():
    decoder = CNNDecoder(z_dim=2, num_filters=4)
    grid = visualize_manifold(decoder, grid_size=3)
    assert grid.shape == (3, 3 * 28 + 4 * 2, 3 * 28 + 4 * 2)
    assert grid.min() >= 0 and grid.max() <= 1
    for p in decoder.parameters():
        torch.nn.init.zeros_(p)
    flat = visualize_manifold(decoder, grid_size=2)  # uniform categorical -> mean value 7.5/15 everywhere
    torch.testing.assert_close(flat[0, 2:30, 2:30], torch.full((28, 28), 0.5))


def test_save_image_grid_maps_the_value_range(tmp_path):
    from PIL import Image

    path = save_image_grid(torch.tensor([[[[0, 15]]], [[[15, 0]]]]), tmp_path / "g.png", nrow=2, value_range=(0, 15),
                           padding=0)
    image = Image.open(path)
    assert image.mode == "L" and image.size == (4, 1)
    assert np.asarray(image)[0].tolist() == [0, 255, 255, 0]
    rgb = save_image_grid(torch.rand(3, 3, 5, 5), tmp_path / "rgb.png", nrow=3, padding=1)
    assert Image.open(rgb).mode == "RGB" and Image.open(rgb).size == (3 * 6 + 1, 7)
    with pytest.raises(ValueError):
        save_image_grid(torch.zeros(1, 1, 2, 2), tmp_path / "x.png", value_range=(1, 1))


# -- the experiment ---------------------------------------------------------------------------------------------------
def test_smoke_run_on_fake_idx_files_and_figures_rebuild(tmp_path):
    from dl1.data.fake import write_idx
    from dl1.experiments import execute
    from dl1.report.generative import vae_figures as make_figures

    write_idx(tmp_path / "data", "fashion-mnist", n_train=80, n_test=24)
    argv = ["--dataset", "fashion-mnist", "--data_dir", str(tmp_path / "data"), "--val_size", "16", "--epochs", "1",
            "--z_dim", "2", "--num_filters", "4", "--batch_size", "16", "--sample_every", "1"]
    summary = execute("vae", argv, out_dir=tmp_path / "runs", quiet=True)
    assert summary["sizes"] == {"train": 64, "val": 16, "test": 24}
    # four Adam steps leave the model close to uniform over the 16 levels (4 bits); bits in nats (2.77), a sum
    # over pixels or images, or a missing KL/reconstruction term would leave this band
    assert 3.9 < summary["test_bpd"] < 4.1 and not summary["synthetic_data"]
    assert 0 < summary["baseline_pixel_categorical"]["test_bpd"] < 5
    figures = Path(summary["run_dir"]) / "figures"
    names = {"vae_learning_curve.png", "vae_manifold.png", "vae_samples_epoch_000.png", "vae_samples_epoch_001.png"}
    assert names <= {p.name for p in figures.iterdir()}
    for f in figures.iterdir():
        f.unlink()
    assert {p.name for p in make_figures(summary["run_dir"])} == names  # from the run folder alone
    assert all((figures / n).stat().st_size > 0 for n in names)


def test_vae_learns_below_uniform_and_the_pixel_model(tmp_path):
    """512 fake images (class brightness + noise, 4 bits), 3 epochs: the VAE beats the uniform 4-bit model (4 bits)
    and the per-pixel categorical baseline by a wide margin; a VAE that does not learn stays near 4."""
    from dl1.data.fake import write_idx
    from dl1.experiments import execute

    write_idx(tmp_path / "data", "fashion-mnist", n_train=560, n_test=100)
    summary = execute("vae", ["--dataset", "fashion-mnist", "--data_dir", str(tmp_path / "data"), "--val_size", "48",
                              "--epochs", "3", "--z_dim", "2", "--num_filters", "8", "--batch_size", "32", "--lr",
                              "0.01", "--sample_every", "100"], out_dir=tmp_path / "runs", quiet=True)
    baseline = summary["baseline_pixel_categorical"]["test_bpd"]
    assert 3.5 < baseline < 4.1  # these images are close to uniform pixel by pixel
    assert 0 < summary["test_bpd"] < min(3.5, baseline - 0.4)


def test_resume_continues_the_folder_and_matches_an_uninterrupted_run(tmp_path):
    from dl1.experiments import execute

    full = execute("vae", ["--epochs", "2"], smoke=True, out_dir=tmp_path / "a", quiet=True)
    first = execute("vae", ["--epochs", "1"], smoke=True, out_dir=tmp_path / "b", quiet=True)
    resumed = execute("vae", ["--epochs", "2", "--resume", first["run_dir"]], smoke=True, out_dir=tmp_path / "b",
                      quiet=True)
    assert resumed["run_dir"] == first["run_dir"] and resumed["epochs_run"] == 2 and resumed["synthetic_data"]
    assert resumed["test_bpd"] == pytest.approx(full["test_bpd"], rel=1e-6)
    assert resumed["best_val_bpd"] == pytest.approx(full["best_val_bpd"], rel=1e-6)
    records = [json.loads(line) for line in (Path(first["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["split"] == "train"] == [1, 2]
    assert len([r for r in records if r["split"] == "baseline"]) == 1


def test_missing_dataset_is_one_clear_error(tmp_path):
    from dl1.errors import DL1Error
    from dl1.experiments import execute

    with pytest.raises(DL1Error, match="mnist"):
        execute("vae", ["--dataset", "mnist", "--data_dir", str(tmp_path / "nothing"), "--epochs", "1"],
                out_dir=tmp_path / "runs", quiet=True)


def test_bad_flags_are_usage_errors():
    from dl1.errors import UsageError
    from dl1.experiments import make_config

    with pytest.raises(UsageError, match="z_dim"):
        make_config("vae", ["--z_dim", "0"])
    with pytest.raises(UsageError, match="resume"):
        make_config("vae", ["--resume", "/no/such/run"])
    assert make_config("vae", []).dataset == "mnist" and make_config("vae", []).epochs == 80


def test_too_big_a_step_is_one_line_saying_what_fits(tmp_path, monkeypatch):
    import dl1.run.device
    from dl1.errors import DL1Error
    from dl1.experiments import execute
    from dl1.experiments.memory_advice import check_step_fits
    from dl1.models.vae import VAE

    need = 16 * sum(p.numel() for p in VAE(4, 2).parameters()) + 4 * 100 * VAE.activation_floats(4)
    check_step_fits(lambda: VAE(4, 2), VAE.activation_floats(4), 100, need, what="the VAE", where="cpu")  # fits
    with pytest.raises(DL1Error, match=r"what fits: --batch_size 99$"):
        check_step_fits(lambda: VAE(4, 2), VAE.activation_floats(4), 100, need - 1, what="the VAE", where="cpu")
    monkeypatch.setattr(dl1.run.device, "available_memory", lambda device: 2**20)
    with pytest.raises(DL1Error, match=r"^training the VAE .* on --batch_size 4096 needs about .* GiB .*--batch_size"):
        execute("vae", ["--batch_size", "4096"], smoke=True, out_dir=tmp_path, quiet=True)
    assert not (tmp_path / "vae").exists() or not any((tmp_path / "vae").iterdir())  # no run folder left


def test_snapshots_are_arrays_only_a_pickle_inside_is_refused(tmp_path):
    from dl1.errors import DL1Error
    from dl1.report.generative import load_epoch_arrays, save_epoch_arrays

    save_epoch_arrays(tmp_path / "samples", 3, images=np.zeros((2, 1, 28, 28), np.uint8))
    assert load_epoch_arrays(tmp_path / "samples")[3]["images"].shape == (2, 1, 28, 28)
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["epoch_003.npz"]  # no temporary file left

    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    np.savez(tmp_path / "samples" / "epoch_004.npz", images=np.array([Payload()], dtype=object))
    with pytest.raises(DL1Error, match="epoch_004.npz: not a readable snapshot"):
        load_epoch_arrays(tmp_path / "samples")
    assert not marker.exists()
