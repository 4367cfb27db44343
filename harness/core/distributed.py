"""Who this process is among a trial's workers, and how they exchange small Python objects.

``python -m harness.launch`` starts one worker per slot and tells each who it is the way
``torchrun`` does (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``). With more than one worker this module joins them in a
``torch.distributed`` process group (NCCL when there is a GPU, gloo otherwise) and runs the
object collectives over a gloo group, because NCCL moves only GPU tensors. With one worker
everything is trivial and torch is never imported, so a Core API script without torch works.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

# How long workers wait for each other (first rendezvous, each collective) before failing.
DEFAULT_TIMEOUT = timedelta(minutes=30)


class DistributedContext:
    """Rank and size of this worker; collectives over all workers (the chief is rank 0).

    Every collective (:meth:`gather`, :meth:`allgather`, :meth:`broadcast`, :meth:`barrier`)
    must be called by every worker in the same order, as with ``torch.distributed``.
    """

    def __init__(
        self,
        rank: int = 0,
        size: int = 1,
        local_rank: int = 0,
        local_size: int = 1,
        cross_rank: int = 0,
        cross_size: int = 1,
    ) -> None:
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} is not in [0, {size})")
        self.rank = rank
        self.size = size
        self.local_rank = local_rank
        self.local_size = local_size
        self.cross_rank = cross_rank
        self.cross_size = cross_size
        self._group: Any = None  # the gloo group for objects, once joined
        self._owns_default_group = False

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, timeout: timedelta = DEFAULT_TIMEOUT
    ) -> DistributedContext:
        """The worker described by ``RANK``/``WORLD_SIZE``/…; single-process when unset.

        With ``WORLD_SIZE`` > 1 this blocks until every worker has joined the process group.
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        size = _env_int(env, "WORLD_SIZE", 1)
        rank = _env_int(env, "RANK", 0)
        local_rank = _env_int(env, "LOCAL_RANK", rank)
        local_size = _env_int(env, "LOCAL_WORLD_SIZE", size)
        context = cls(
            rank=rank,
            size=size,
            local_rank=local_rank,
            local_size=local_size,
            cross_rank=rank // max(local_size, 1),
            cross_size=max(size // max(local_size, 1), 1),
        )
        if size > 1:
            missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
            if missing:
                raise RuntimeError(
                    f"WORLD_SIZE={size} but {', '.join(missing)} unset: distributed workers are "
                    "started by `python -m harness.launch`, which sets them"
                )
            context._join(env, timeout)
        return context

    def _join(self, env: Mapping[str, str], timeout: timedelta) -> None:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(
                backend=backend,
                init_method=f"tcp://{env['MASTER_ADDR']}:{env['MASTER_PORT']}",
                rank=self.rank,
                world_size=self.size,
                timeout=timeout,
            )
            self._owns_default_group = True
        if dist.get_backend() == "gloo":
            self._group = dist.group.WORLD
        else:
            self._group = dist.new_group(backend="gloo", timeout=timeout)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    # Determined's getters (its model code calls ``context.distributed.get_rank()``).
    def get_rank(self) -> int:
        return self.rank

    def get_local_rank(self) -> int:
        return self.local_rank

    def get_size(self) -> int:
        return self.size

    def get_local_size(self) -> int:
        return self.local_size

    def get_cross_rank(self) -> int:
        return self.cross_rank

    def get_cross_size(self) -> int:
        return self.cross_size

    def get_num_agents(self) -> int:
        return self.cross_size

    # ---- collectives ----------------------------------------------------------------------

    def gather(self, obj: Any) -> list[Any] | None:
        """Every worker's ``obj``, in rank order, on the chief; ``None`` on the others."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.size if self.is_chief else None
        dist.gather_object(obj, out, dst=0, group=self._group)
        return out

    def allgather(self, obj: Any) -> list[Any]:
        """Every worker's ``obj``, in rank order, on every worker."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj, group=self._group)
        return out

    def broadcast(self, obj: Any = None) -> Any:
        """The chief's ``obj`` on every worker (what the others pass is ignored)."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_chief else None]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return box[0]

    def broadcast_flag(self, flag: bool) -> bool:
        """The chief's ``flag`` on every worker; cheaper than :meth:`broadcast` (no pickling),
        for checks made every batch."""
        if self.size == 1:
            return flag
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([1 if flag else 0], dtype=torch.uint8)
        dist.broadcast(tensor, src=0, group=self._group)
        return bool(tensor.item())

    def barrier(self) -> None:
        if self.size == 1:
            return
        import torch.distributed as dist

        dist.barrier(group=self._group)

    def close(self) -> None:
        """Leave the process group if this context created it."""
        if self._owns_default_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._owns_default_group = False
        self._group = None


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise RuntimeError(f"{name} must be an integer, got {text!r}") from None
