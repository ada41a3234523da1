"""Several GPUs (or CPU processes) with torchrun + DistributedDataParallel; the same experiment as one.

    torchrun --nproc_per_node=4 train.py --dataset coco --fold 0 ...    # the authors: 4 GPUs, total batch 8
    torchrun --nproc_per_node=4 evaluate.py --runs runs ...

A plain `python train.py` runs as one process of a world of one and nothing here changes it. Under
torchrun every rank builds the same model and reads its share of the same seeded order of episodes:
each global batch of `--batch-size` (the TOTAL batch, §5.1: 8) is split into contiguous chunks, one
per rank. The loss is normalised over the whole global batch (model.vrp_loss's global_sum) and
scaled by N against DDP's averaging of the ranks' gradients (train.train_step), so the update is the
single-process one up to float rounding. Validation and evaluation shard the episodes and add up
the per-class intersections and unions, so the metric is the single-process one exactly.

When a rank dies (killed, crashed, out of memory), the others meet it in their next collective and
stop there: `ProcessLost`, reported by the scripts in one line (train.py's names the last.pt to
resume from, `resumable`), not as the backend's traceback from inside all_reduce.

Exposes `World`, `setup`, `wrap`, `GlobalBatchShare`, `shard`, `sum_meter`, `ProcessLost` and
`resumable`; train.py and evaluate.py use them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler, Subset


@dataclass(frozen=True)
class World:
    """This process's place among torchrun's: rank of size, and local_rank of local_size on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives run

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, writes logs, checkpoints and results."""
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over all ranks (the tensor itself in a world of one)."""
        if self.size == 1:
            return tensor
        total = tensor.detach().to(self.device, copy=True)
        try:
            dist.all_reduce(total)
        except RuntimeError as error:
            if not peer_gone(error):
                raise
            raise ProcessLost(self) from error
        return total.to(tensor.device)


class ProcessLost(ConnectionError):
    """Another rank stopped (killed, crashed, out of memory) while this one waited for it in a
    collective. A ConnectionError, so the scripts' error wrapper (cli.run_main) ends the rank with
    this one line rather than the backend's traceback."""

    def __init__(self, world: World, advice: str = "rerun the same command") -> None:
        super().__init__(f"a process under torchrun stopped (killed or crashed: its own output says why) while rank "
                         f"{world.rank} of {world.size} waited for it; {advice}")


# What gloo and NCCL say when the other end of a collective is gone.
_PEER_GONE = re.compile(r"by peer|broken pipe|remote (worker|process)|communicator was aborted|timed out waiting",
                        re.IGNORECASE)


def peer_gone(error: BaseException) -> bool:
    """Whether `error` is a collective failing because another rank is gone (not, say, out of memory)."""
    return isinstance(error, dist.DistError) or (isinstance(error, RuntimeError)
                                                 and _PEER_GONE.search(str(error)) is not None)


@contextlib.contextmanager
def resumable(world: World, checkpoint: Path):
    """Under torchrun, another rank lost in any collective (World.sum's, or DDP's gradient
    all-reduce inside backward) ends this one with a ProcessLost that says whether `checkpoint`
    (train.py's last.pt, written whole or not at all by rank 0) is there to resume from."""
    try:
        yield
    except (ProcessLost, RuntimeError) as error:
        if world.size == 1 or not (isinstance(error, ProcessLost) or peer_gone(error)):
            raise
        if checkpoint.is_file():
            advice = f"{checkpoint} is intact: rerun the same command with --resume to continue from it"
        else:
            advice = f"no {checkpoint} to resume from yet (rank 0 writes it after each epoch): rerun the same command"
        raise ProcessLost(world, advice) from error


def setup(device: str, batch_size: int, prog: str) -> World:
    """Join torchrun's process group when launched by it (WORLD_SIZE > 1), after checking that
    the total batch divides among the ranks and that each rank has its own GPU.

    Exits with one line on bad input (printed by each machine's first process). On CUDA each rank
    takes GPU LOCAL_RANK as its current device, so `--device cuda` means "this rank's GPU".
    """
    size = int(os.environ.get("WORLD_SIZE", 1))
    if size == 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    target = torch.device(device)
    error = None
    if batch_size % size:
        error = (f"--batch-size {batch_size} is the total batch over all {size} processes and must be divisible by "
                 f"{size}: pass a multiple of {size} (the paper: 8), or launch a number of processes that divides it")
    elif target.type == "cuda" and target.index is not None:
        error = f"--device {device}: under torchrun each process takes the GPU of its LOCAL_RANK; pass --device cuda"
    elif target.type == "cuda" and torch.cuda.device_count() < local_size:
        gpus = torch.cuda.device_count()
        error = f"--device cuda: {local_size} processes on this machine but {gpus} GPU(s) visible; " + (
            f"launch torchrun --nproc_per_node={gpus} or fewer, or pass --device cpu" if gpus else "pass --device cpu"
        )
    elif target.type not in ("cuda", "cpu"):
        error = f"--device {device}: torchrun runs on cuda (NCCL) or cpu (gloo) only"
    if error:
        sys.exit(f"{prog}: error: {error}" if local_rank == 0 else 1)
    if target.type == "cuda":
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    if not dist.is_initialized():  # a process may run train.main then evaluate.main (tests)
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    return World(rank=rank, size=size, local_rank=local_rank, local_size=local_size, device=target)


def wrap(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """The model whose forward trains: DistributedDataParallel over the learnable VRP encoder's
    parameters in a world of several, the model itself in a world of one.

    The frozen backbone and SAM are loaded from the same files on every rank, so DDP neither
    broadcasts them at the start (SAM ViT-H: 2.5 GB) nor their buffers (frozen BatchNorm) at every
    forward; the VRP encoder has none (LayerNorm only: no statistics across the batch).
    """
    if world.size == 1:
        return model
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    frozen += [name for name, _ in model.named_buffers()]
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, frozen)
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def rank_seed(seed: int, world: World) -> int:
    """Rank 0 keeps `seed` (so one process under torchrun is a plain run); the others draw their
    own dropout masks. Dropout2d's masks thus differ from a single process's: the same
    distribution, not the same draws (tests/test_distributed.py compares runs with dropout 0)."""
    return seed if world.rank == 0 else int(np.random.SeedSequence([seed, world.rank]).generate_state(1)[0])


class GlobalBatchShare(Sampler[int]):
    """This rank's share of `order`: global batch after global batch of `batch_size` indices, each
    cut into world.size contiguous chunks, rank r taking chunk r; an incomplete last batch is dropped.

    order: any iterable of indices, read once per epoch when iteration starts (a RandomSampler
    on the DataLoader's own generator draws the same permutation as DataLoader(shuffle=True)).
    """

    def __init__(self, order, batch_size: int, world: World) -> None:
        self.order, self.batch_size, self.world = order, batch_size, world
        self.local = batch_size // world.size

    def __iter__(self):
        order = list(self.order)
        start = self.world.rank * self.local
        for batch in range(len(order) // self.batch_size):
            yield from order[batch * self.batch_size + start: batch * self.batch_size + start + self.local]

    def __len__(self) -> int:
        return len(self.order) // self.batch_size * self.local


def shard(dataset: Dataset, world: World) -> Dataset:
    """Rank r's contiguous block of the evaluation episodes (the whole dataset in a world of one)."""
    if world.size == 1:
        return dataset
    n = len(dataset)
    return Subset(dataset, range(world.rank * n // world.size, (world.rank + 1) * n // world.size))


def sum_meter(meter, world: World) -> None:
    """Add up every rank's evaluate.IoUMeter in place: integer counts, so the sum is exact."""
    if world.size == 1:
        return
    counts = torch.tensor([[*meter.intersection[c], *meter.union[c], meter.episodes[c]] for c in meter.class_ids],
                          dtype=torch.float64)  # (classes, 5): intersection bg, fg; union bg, fg; episodes
    for c, row in zip(meter.class_ids, world.sum(counts).numpy()):
        meter.intersection[c], meter.union[c], meter.episodes[c] = row[0:2].copy(), row[2:4].copy(), int(row[4])
