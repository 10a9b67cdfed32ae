"""torch.distributed helpers: process-group setup from torchrun's environment, sharding, gathers.

Everything here is a no-op in a single process, so the same code path serves 1 and N ranks.
"""
from __future__ import annotations

import gc
import os
import warnings
import weakref

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str) -> bool:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU). True if joined."""
    if not launched_by_torchrun() or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # torch.distributed.nn.functional evaluates ``group=group.WORLD`` in its functions' default
    # arguments when first imported, which torch._dynamo does lazily (at the first optimizer, say).
    # Imported after the group exists it keeps the group alive until interpreter teardown, so that
    # shutdown() could not free it; imported now, the defaults are None (= the default group).
    import torch.distributed.nn.functional  # noqa: F401

    dist.init_process_group(backend=backend)
    return True


def shutdown() -> bool:
    """Leave the process group and free it now, while Python is fully alive. True if it was freed.

    Call it on every rank when the work is done (it starts with a barrier). Without it the group
    lives until interpreter teardown, and a gloo worker thread that drops the last reference to a
    finished collective's tensors then needs the GIL: Python ends such a thread with pthread_exit,
    whose unwinding through a noexcept destructor calls std::terminate ("terminate called without
    an active exception", SIGABRT; about 1 in 15 torchrun test runs on a loaded 2-core machine, and
    half the runs of the minimal script in benchmarks/torchrun_teardown_loop.py).
    Freeing the group here joins those threads first. It is freed only if nothing else still holds
    it (a live DistributedDataParallel wrapper does); then this warns and returns False.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return True
    if dist.get_world_size() > 1:
        dist.barrier()  # every rank is done with every collective before the group goes away
    group = weakref.ref(dist.group.WORLD)
    dist.destroy_process_group()
    gc.collect()  # whatever holds the group only through a reference cycle goes now, not at teardown
    if group() is not None:
        warnings.warn(
            "anomalykit: the torch.distributed process group is still referenced after destroy_process_group() "
            "(e.g. by a live DistributedDataParallel wrapper); it will be freed at interpreter exit, where gloo "
            "can abort the process",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def shard_bounds(n: int) -> tuple[int, int]:
    """Contiguous [start, stop) slice of ``n`` items owned by this rank (sizes differ by <= 1)."""
    ws, r = world_size(), rank()
    base, extra = divmod(n, ws)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def gather_shards(local: torch.Tensor, n: int) -> torch.Tensor:
    """All-gather per-rank contiguous shards (from :func:`shard_bounds`) back into input order."""
    if not is_distributed():
        return local
    ws = world_size()
    sizes = [shard_size(n, r, ws) for r in range(ws)]
    longest = max(sizes)
    backend_device = local.device if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros((longest,) + tuple(local.shape[1:]), dtype=local.dtype, device=backend_device)
    padded[: local.shape[0]] = local.to(backend_device)
    bufs = [torch.empty_like(padded) for _ in range(ws)]
    dist.all_gather(bufs, padded)
    return torch.cat([b[:s] for b, s in zip(bufs, sizes)]).to(local.device)


def shard_size(n: int, r: int, ws: int) -> int:
    base, extra = divmod(n, ws)
    return base + (1 if r < extra else 0)


def average_gradients(params) -> None:
    """All-reduce (mean) the ``.grad`` of ``params`` across ranks, flattened into one bucket."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy parameters and buffers of ``module`` from rank ``src`` to all ranks."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
