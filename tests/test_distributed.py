"""Two CPU processes with the gloo backend end with identical weights (DistributedDataParallel through the engine),
and those weights are the ones a single process reaches by averaging the two ranks' gradients at every step."""

import os

import torch
import torch.multiprocessing as mp
from torch import nn

EPOCHS, BATCH, LR = 2, 8, 0.1


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from dl1.data.loaders import TensorBatches
    from dl1.runtime import Run
    from dl1.train import Trainer
    from dl1.train import distributed as D

    info = D.init_distributed("gloo", init_method=f"file://{init_file}")
    torch.manual_seed(rank)  # different init per rank: DDP must broadcast rank 0's weights
    model = D.wrap(nn.Linear(4, 3), info)
    torch.save(model.module.state_dict(), os.path.join(out_dir, f"init{rank}.pt"))  # after DDP's broadcast
    x, y = _data()
    run = Run("ddp", {}, root=out_dir, enabled=info.is_main, quiet=True)
    trainer = Trainer(run, {"model": model}, {"main": torch.optim.SGD(model.parameters(), lr=LR)}, epochs=EPOCHS,
                      monitor=None)

    def step(batch):
        loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
        trainer.backward_step(loss)
        return {"loss": loss}

    trainer.fit(lambda e: TensorBatches(x, y, batch_size=BATCH, shuffle=True, seed=0, epoch=e, rank=info.rank,
                                        world_size=info.world_size), step)
    torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    D.cleanup()


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


def test_two_gloo_ranks_end_identical(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    init = torch.load(tmp_path / "init0.pt", weights_only=True)
    init1 = torch.load(tmp_path / "init1.pt", weights_only=True)
    assert all(torch.equal(init[k], init1[k]) for k in init)  # rank 1 started from rank 0's weights
    reference = _single_process_reference(init).state_dict()
    for k in a:
        moved = (reference[k] - init[k]).abs().max().item()
        assert moved > 1e-2, k  # it trained: 2 epochs x 4 steps moved every tensor well beyond the tolerance
        torch.testing.assert_close(a[k], reference[k], rtol=1e-5, atol=1e-6)


def test_torchrun_trains_mlp_pytorch_with_ddp(tmp_path):
    """The real launcher: two gloo ranks run the experiment, each on half of every epoch; rank 0 writes the folder."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "DL1_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "dl1", "run", "mlp-pytorch", "--smoke", "--epochs", "1", "--run_dir", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    single = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = next(r["step"] for r in single if r["split"] == "train")
    assert steps == 512 // 64 // 2  # synthetic smoke data: 512 training images, batch 64, two shards
    assert 0.0 <= summary["test_accuracy"] <= 1.0
