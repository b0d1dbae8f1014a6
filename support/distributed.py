"""The process plumbing of training: torchrun set-up, ranks that agree to stop, RNG states, signals.

`python train.py` is one process. `torchrun --nproc_per_node=N train.py` starts N, one per GPU
(or per share of the CPU cores), and DistributedDataParallel averages their gradients. A few
things must then hold that a single process gets for free, and they live here so that `train.py`
reads as the training algorithm:

  * every rank stops after the same step (`agree`), or the next gradient all-reduce waits forever;
  * a checkpoint holds every rank's RNG state (`gather_rng`), so a resumed run continues each
    rank's stream of noise and timesteps;
  * the logged loss is the mean over every rank's batches (`summed`);
  * the ranks' weights are identical at the end (`check_ranks_in_sync`);
  * Ctrl-C (SIGINT) and SIGTERM ask for a clean stop instead of killing mid-step (`StopRequests`);
  * the ranks leave the process group together, once every one of them is done (`processes`).

With one process every function here is a no-op or a plain read.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from support.checkpoint import rng_state
from support.cli import UserError, gpus_seen, pick_device


@dataclass
class Processes:
    """Where this process trains and who it is among the processes of the run."""
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """The first process alone prints, logs, saves and draws."""
        return self.rank == 0


@contextmanager
def processes(device_flag: str | None) -> Iterator[Processes]:
    """`with processes(flag) as procs:` the block runs as this process of the run, and the run
    ends in an agreed order: a rank that leaves the block normally first waits at a barrier until
    every rank has (the first one may still be drawing the final samples), and only then leaves
    the process group; a rank that leaves with an exception leaves at once, since the others may
    never reach the barrier (torchrun then stops them).

    Why wait: a collective returns as soon as its result is there, but a gloo worker thread still
    has to drop the tensors it used, which takes the GIL. A rank that went straight from its last
    collective to exit could reach interpreter shutdown first; a thread that then asks for the
    GIL is ended by Python inside a C++ destructor, and the process dies with "terminate called
    without an active exception" (SIGABRT) after training well. At the barrier the workers
    finish; the barrier itself holds none of our tensors."""
    procs = setup_processes(device_flag)
    try:
        yield procs
    except BaseException:
        teardown_processes()
        raise
    barrier(procs)
    teardown_processes()


def setup_processes(device_flag: str | None) -> Processes:
    """One process (plain `python train.py`), or one of several started by torchrun, which sets
    RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in the environment."""
    device = pick_device(device_flag)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes(device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda" and device.index is not None:
        raise UserError(f"--device {device_flag}: under torchrun each process takes the GPU of its "
                        "LOCAL_RANK; pass --device cuda, and choose the GPUs with "
                        "CUDA_VISIBLE_DEVICES")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started process {local_rank} of this machine (one GPU "
                            f"each), but {gpus_seen()}: pass a smaller --nproc_per_node")
        device = torch.device("cuda", local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Processes(device, rank, world_size)


def barrier(procs: Processes) -> None:
    """Wait until every process gets here (while the first one writes a file the others read)."""
    if procs.world_size > 1:
        dist.barrier()


def teardown_processes() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def agree(procs: Processes, *reasons: bool) -> tuple[bool, ...]:
    """Each rank's reasons to stop (a signal, the time limit, a NaN loss), shared: each comes
    back true on every rank if it is true on any, so that all of them leave the loop after the
    same step, for the same reason."""
    if procs.world_size == 1:
        return reasons
    flags = torch.tensor([float(r) for r in reasons], device=procs.device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return tuple(bool(f) for f in flags)


def gather(procs: Processes, value):
    """Every rank's `value` (plain Python types), rank by rank (to be called on every rank: it
    is a collective)."""
    if procs.world_size == 1:
        return [value]
    values = [None] * procs.world_size
    dist.all_gather_object(values, value)
    return values


def gather_rng(procs: Processes) -> list[dict]:
    """Every rank's RNG state, rank by rank (to be called on every rank: it is a collective)."""
    return gather(procs, rng_state(procs.device))


def summed(procs: Processes, *numbers: float) -> list[float]:
    """Each of `numbers` summed over the ranks (to be called on every rank: a collective), e.g.
    every rank's sum of losses and count of steps, for the mean over all of their batches."""
    if procs.world_size == 1:
        return list(numbers)
    total = torch.tensor(numbers, dtype=torch.float64, device=procs.device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.tolist()


def check_ranks_in_sync(model: torch.nn.Module, procs: Processes) -> None:
    """DDP keeps every rank's weights identical; check that exactly at the end of training."""
    if procs.world_size == 1:
        return
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(procs.world_size)]
    dist.all_gather(gathered, flat)
    if procs.is_main:
        same = all(torch.equal(g, gathered[0]) for g in gathered)
        print(f"weights identical on all {procs.world_size} ranks: {same}")
        if not same:
            raise RuntimeError("DDP ranks diverged: their weights differ")


class StopRequests:
    """While installed, Ctrl-C (SIGINT) and SIGTERM only note the signal: the training loop
    finishes its step, saves and exits. A signal during the final samples changes nothing."""

    def __init__(self):
        self.signals: list[int] = []

    def __enter__(self) -> "StopRequests":
        self.old = {s: signal.signal(s, self.note) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.old.items():
            signal.signal(s, handler)

    def note(self, signum, frame) -> None:
        self.signals.append(signum)

    def exit_status(self) -> int:
        """What a process stopped by a signal returns: 128 + its number (130 for Ctrl-C)."""
        return 128 + (self.signals[0] if self.signals else signal.SIGINT)
