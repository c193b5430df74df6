"""Data-parallel training on PyTorch's own engine (torch.distributed + torchrun).

``fmnist train`` runs unchanged under ``torchrun --nproc-per-node=N -m fmnist train ...``:
:func:`setup` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR...)
and joins the process group, gloo on the CPU and NCCL on CUDA.

The rules the fit loop follows:

- ``batch_size`` is the **global** batch: each step takes the same slice of the epoch's
  shuffled order on every rank (the permutation comes from the shared seed), and rank r
  trains on every world_size-th image of it. Gradients are averaged by
  DistributedDataParallel, so with equal shards a step equals a single-process step on the
  global batch; the learning rate is therefore left as it is (no scaling rule needed).
- Augmentation and dropout are seeded per rank (seed, epoch, rank).
- Only rank 0 prints progress, writes checkpoints, history, metrics, model and report; the
  other ranks wait at a barrier before they read anything rank 0 wrote.
- Validation and test sets are split into contiguous shards, one per rank, evaluated
  once each (no padded duplicates), and the sums are reduced across ranks.
- BatchNorm keeps per-rank statistics on the CPU (gloo has no SyncBatchNorm);
  ``--sync-bn`` converts to SyncBatchNorm on CUDA.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .errors import ConfigError

log = logging.getLogger("fmnist")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this context initialized the process group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of a few numbers across ranks (float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda(self.local_rank)
        return self.sum_tensor_(t).cpu().tolist()

    def sum_tensor_(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of a tensor across ranks, in place (on its own device)."""
        if self.enabled:
            dist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any."""
        return self.sum([1.0 if flag else 0.0])[0] > 0 if self.enabled else flag

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value of ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` as a list on rank 0 (None elsewhere)."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items (shares differ by at most one)."""
        bounds = np.linspace(0, n, self.world_size + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group when launched by torchrun; returns (context, device).

    On CUDA each rank takes the GPU of its LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if local >= gpus:
            raise ConfigError(f"rank {rank} (LOCAL_RANK {local}) needs GPU {local}, and this "
                              f"machine has {gpus}: start at most {gpus} per machine "
                              "(--nproc-per-node), or train on the CPU (--device cpu).")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    if rank != 0:  # rank 0 speaks for the job; the others report only errors
        logging.getLogger("fmnist").setLevel(logging.ERROR)
        os.environ["FMNIST_NO_PROGRESS"] = "1"
    return DistContext(rank, world, local, owns), device


def check_gpus(nproc: int, device: torch.device) -> None:
    """Refuse more processes than GPUs on CUDA, before any starts: each rank takes the GPU
    of its LOCAL_RANK (NCCL cannot put two ranks on one GPU)."""
    if device.type != "cuda":
        return
    gpus = torch.cuda.device_count()
    if nproc > gpus:
        fix = ("drop --nproc to train on its GPU" if gpus == 1
               else f"use --nproc {gpus} or fewer")
        raise ConfigError(f"--nproc {nproc} on CUDA needs one GPU per process, and this "
                          f"machine has {gpus}: {fix}, or add --device cpu for {nproc} CPU "
                          "processes.")


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``fmnist <argv>`` in ``nproc`` local processes through torchrun's API.

    Returns the job's exit code as one process would: 130 when interrupted (Ctrl-C saves
    a resumable checkpoint), 2 when the ranks stopped on a user error (rank 0 printed it),
    1 for anything else. torchrun's own log lines are kept to errors it alone can tell."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "-m", "fmnist", *argv]
    )
    quiet = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
             if n.startswith("torch.distributed")]  # each sets its own level
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.CRITICAL)
    try:
        run(args)
    except (SignalException, KeyboardInterrupt):
        return 130
    except ChildFailedError as e:
        return exit_code([f.exitcode for f in e.failures.values()])
    except Exception as e:  # the rendezvous or the agent itself failed
        log.error("distributed run failed: %s", str(e).splitlines()[0] if str(e) else e)
        return 1
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
    return 0


def exit_code(codes: Sequence[int]) -> int:
    """One exit code for a job from its failed ranks' codes: 2 if a rank stopped on a user
    error (torchrun then stops the others), else 130 if one was interrupted (or killed by
    SIGINT/SIGTERM), else 1."""
    if 2 in codes:
        return 2
    return 130 if any(c in (130, -2, -15) for c in codes) else 1
