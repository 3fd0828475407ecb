"""The engine's data parallelism with two CPU processes (gloo): through ``trainer.wrap`` (PyTorch's
DistributedDataParallel) both ranks end with identical weights, the weights one process reaches by averaging the two
ranks' gradients; an unwrapped trained module is refused; metrics averaged (weighted by ``n``), batch-norm statistics
averaged, a non-finite loss on one rank stops both, per-rank random streams, exact resume."""

import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

EPOCHS, BATCH, LR = 2, 8, 0.1


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)


def _join(rank: int, world_size: int, init_file: str):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from dl1.train import distributed as D

    return D.init_distributed("gloo", init_method=f"file://{init_file}")


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    info = _join(rank, world_size, init_file)
    from dl1.train import distributed as D

    _train_and_refuse(rank, info, out_dir)
    D.cleanup()  # after the wrappers are gone, as dl1's own runs leave the group (see distributed.cleanup)


def _train_and_refuse(rank: int, info, out_dir: str) -> None:
    from dl1.data.loaders import TensorBatches
    from dl1.errors import DL1Error
    from dl1.run.folder import Run
    from dl1.train import Trainer

    torch.manual_seed(rank)  # different init per rank: the wrapper must start every rank from rank 0's weights
    model = nn.Linear(4, 3)
    x, y = _data()
    run = Run("ddp", {}, root=out_dir, enabled=info.is_main, quiet=True)
    trainer = Trainer(run, {"model": model}, {"main": torch.optim.SGD(model.parameters(), lr=LR)}, epochs=EPOCHS,
                      monitor=None)
    net = trainer.wrap(model)
    torch.save(model.state_dict(), os.path.join(out_dir, f"init{rank}.pt"))  # after the wrapper's broadcast

    def step(batch):
        loss = nn.functional.cross_entropy(net(batch[0]), batch[1])
        trainer.backward_step(loss)
        return {"loss": loss}

    def shards(epoch):
        return TensorBatches(x, y, batch_size=BATCH, shuffle=True, seed=0, epoch=epoch, rank=info.rank,
                             world_size=info.world_size)

    trainer.fit(shards, step)
    torch.save(model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    # a trained module that was not wrapped: its gradients would never be averaged, so fit refuses to start
    loose = nn.Linear(4, 3)
    trainer2 = Trainer(run, {"m": loose}, {"sgd": torch.optim.SGD(loose.parameters(), lr=LR)}, epochs=1, monitor=None)
    try:
        trainer2.fit(shards, step)
    except DL1Error as exc:
        torch.save({"refused": str(exc)}, os.path.join(out_dir, f"loose{rank}.pt"))


def _single_process_reference(init: dict[str, torch.Tensor]) -> nn.Linear:
    """The same SGD in one process: each step's gradient is the mean of the two ranks' batch gradients."""
    from dl1.data.loaders import TensorBatches

    x, y = _data()
    model = nn.Linear(4, 3)
    model.load_state_dict(init)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for epoch in range(EPOCHS):
        shards = [TensorBatches(x, y, batch_size=BATCH, shuffle=True, seed=0, epoch=epoch, rank=r, world_size=2)
                  for r in (0, 1)]
        for (x0, y0), (x1, y1) in zip(*shards, strict=True):
            loss = (nn.functional.cross_entropy(model(x0), y0) + nn.functional.cross_entropy(model(x1), y1)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model


def test_two_gloo_ranks_end_identical_and_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    init = torch.load(tmp_path / "init0.pt", weights_only=True)
    init1 = torch.load(tmp_path / "init1.pt", weights_only=True)
    assert all(torch.equal(init[k], init1[k]) for k in init)  # rank 1 started from rank 0's weights
    reference = _single_process_reference(init).state_dict()
    for k in a:
        assert (reference[k] - init[k]).abs().max().item() > 1e-2, k  # it trained well beyond the tolerance
        torch.testing.assert_close(a[k], reference[k], rtol=1e-5, atol=1e-6)
    for rank in (0, 1):
        refused = torch.load(tmp_path / f"loose{rank}.pt", weights_only=True)["refused"]
        assert "trainer.wrap" in refused and "sgd" in refused


def _helpers_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    info = _join(rank, world_size, init_file)
    from dl1.train import distributed as D

    torch.save(_helpers(rank, info, out_dir), os.path.join(out_dir, f"helpers{rank}.pt"))
    D.cleanup()  # after the wrappers are gone, as dl1's own runs leave the group (see distributed.cleanup)


def _helpers(rank: int, info, out_dir: str) -> dict:
    from dl1.errors import UsageError
    from dl1.run.folder import Run
    from dl1.train import NonFiniteLossError, Trainer
    from dl1.train import distributed as D

    out = {}
    # metrics: weighted by n where a split reports it, else a plain mean
    res = D.average_metrics({"val": {"loss": float(rank + 1), "n": 1 + 3 * rank}, "train": {"acc": float(rank)}})
    out["metrics"] = res
    out["local_batch"] = D.local_batch(8)
    try:
        D.local_batch(7, "--batch_size")
    except UsageError as exc:
        out["odd_batch"] = str(exc)
    out["shards"] = [D.shard(5, D.DistInfo(r, 2)) for r in (0, 1)]
    # batch norm: running statistics averaged at the end of every epoch
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    run = Run("bn", {}, root=out_dir, enabled=info.is_main, quiet=True)
    opt = torch.optim.SGD(bn.parameters(), lr=0.1)
    trainer = Trainer(run, {"bn": bn}, {"sgd": opt}, epochs=1, monitor=None)
    bn_net = trainer.wrap(bn)
    data = torch.full((4, 2), float(rank)) + torch.arange(4.0)[:, None]  # rank-dependent data

    def bn_step(batch):
        loss = bn_net(batch).pow(2).mean()
        trainer.backward_step(loss)
        return {"loss": loss}

    trainer.fit(lambda e: [data], bn_step)
    out["bn"] = {k: v.clone() for k, v in bn.state_dict().items()}
    out["rng"] = torch.rand(3)  # each rank its own stream after the start
    # a NaN on rank 1 alone stops both ranks at the same step
    model = nn.Linear(2, 1)
    run2 = Run("nan", {}, root=out_dir, enabled=info.is_main, quiet=True)
    trainer2 = Trainer(run2, {"m": model}, {"sgd": torch.optim.SGD(model.parameters(), lr=0.1)}, epochs=1,
                       monitor=None)
    net = trainer2.wrap(model)

    def nan_step(batch):
        loss = net(batch).mean() * (float("nan") if rank == 1 and trainer2.step == 2 else 1.0)
        trainer2.backward_step(loss)
        return {"loss": loss}

    try:
        trainer2.fit(lambda e: [torch.ones(2, 2)] * 5, nan_step)
    except NonFiniteLossError as exc:
        out["nan"] = (trainer2.step, str(exc))
    return out


def test_metrics_batch_norm_rng_and_non_finite_across_ranks(tmp_path):
    mp.spawn(_helpers_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"helpers{r}.pt", weights_only=False) for r in (0, 1))
    for r in (r0, r1):
        assert r["metrics"]["val"]["loss"] == pytest.approx((1 * 1 + 2 * 4) / 5)  # n-weighted
        assert r["metrics"]["val"]["n"] == 5
        assert r["metrics"]["train"]["acc"] == pytest.approx(0.5)
        assert r["local_batch"] == 4 and "multiple of 2" in r["odd_batch"]
        assert r["shards"] == [slice(0, 2), slice(2, 5)]
        assert r["nan"][0] == 2 and "non-finite on some rank" in r["nan"][1]  # both stopped before step 3
    for k in r0["bn"]:
        assert torch.equal(r0["bn"][k], r1["bn"][k]), k
    assert not torch.equal(r0["rng"], r1["rng"])


def test_world_checks_refuse_before_anything_runs(monkeypatch, tmp_path, capsys):
    """Under torchrun: an experiment that does not train data parallel, or a global batch the ranks cannot share, is
    one line and exit 2, before any folder is made."""
    from dl1.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["run", "cnn-compare", "--smoke", "--out_dir", str(tmp_path)]) == 2
    assert "does not train data parallel" in capsys.readouterr().err
    assert main(["run", "mlp-pytorch", "--smoke", "--batch_size", "63", "--out_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--batch_size 63 is the global batch, shared by 2 ranks" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_precision_checks():
    from dl1.errors import UsageError
    from dl1.train import precision

    precision.check("bf16", "cpu")
    precision.check("fp32", "cpu")
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        precision.check("fp16", "cpu")
    assert precision.frozen_dtype("bf16", "cpu") == torch.float32
    with precision.autocast("bf16", "cpu"):
        assert nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.bfloat16


def _resume_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """Dropout (per-rank random streams) + sharded data: 3 epochs straight vs 2 epochs then a resume for the third."""
    info = _join(rank, world_size, init_file)
    from dl1.data.loaders import TensorBatches
    from dl1.run.folder import Run
    from dl1.train import Trainer
    from dl1.train import distributed as D

    x, y = _data()

    def train(folder: str, epochs: int, resume: str | None = None) -> dict:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 3))
        run = Run("resume", {}, directory=folder, enabled=info.is_main, quiet=True)
        trainer = Trainer(run, {"m": model}, {"sgd": torch.optim.SGD(model.parameters(), lr=LR)}, epochs=epochs,
                          monitor=None)
        net = trainer.wrap(model)

        def step(batch):
            loss = nn.functional.cross_entropy(net(batch[0]), batch[1])
            trainer.backward_step(loss)
            return {"loss": loss}

        trainer.fit(lambda e: TensorBatches(x, y, batch_size=BATCH, shuffle=True, seed=0, epoch=e, rank=info.rank,
                                            world_size=info.world_size), step, resume=resume)
        run.close()
        return {k: v.clone() for k, v in model.state_dict().items()}

    straight = train(os.path.join(out_dir, "straight"), 3)
    train(os.path.join(out_dir, "cut"), 2)
    torch.distributed.barrier()  # rank 0 has written last.pt
    resumed = train(os.path.join(out_dir, "cut"), 3, resume=os.path.join(out_dir, "cut"))
    torch.save({"straight": straight, "resumed": resumed}, os.path.join(out_dir, f"resume{rank}.pt"))
    D.cleanup()


def test_resume_under_two_ranks_is_exact(tmp_path):
    mp.spawn(_resume_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        r = torch.load(tmp_path / f"resume{rank}.pt", weights_only=True)
        for k in r["straight"]:
            assert torch.equal(r["straight"][k], r["resumed"][k]), (rank, k)
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["world_size"] == 2


def _parts_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    _join(rank, world_size, init_file)
    from dl1.train import distributed

    rows = torch.arange(5 * 2, dtype=torch.float32).reshape(5, 2)
    part = distributed.part_of(list(range(5)))
    correct = sum(1 for i in part if i % 2 == 0)  # items 0, 2, 4 are right: 3 of 5
    torch.save({"part": list(part), "gathered": distributed.gather_parts(rows[list(part)], 5),
                "counts": distributed.sum_counts(correct, len(part))}, f"{out_dir}/parts{rank}.pt")
    distributed.cleanup()


def test_ranks_share_a_split_and_every_rank_gets_the_single_process_result(tmp_path):
    """Two gloo ranks, 5 items: contiguous parts [0, 1] and [2, 3, 4]; the gathered rows and the summed counts on
    every rank are those of one process (exact); in one process the helpers hand their input back."""
    from dl1.train import distributed

    mp.spawn(_parts_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"parts{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["part"] == [0, 1] and r1["part"] == [2, 3, 4]
    whole = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    assert torch.equal(r0["gathered"], whole) and torch.equal(r1["gathered"], whole)
    assert r0["counts"] == r1["counts"] == [3, 5]
    one = list(range(5))
    assert distributed.part_of(one) is one and distributed.gather_parts(whole, 5) is whole
    assert distributed.sum_counts(3, 5) == [3, 5]
