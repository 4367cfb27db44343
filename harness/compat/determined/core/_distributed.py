"""``det.core.DistributedContext``: Determined's names over ``harness.core.DistributedContext``.

Determined's own context talks over ZMQ; this one is harness's, which joins a
``torch.distributed`` process group (gloo for Python objects), so it needs torch with more than
one worker. ``from_torch_distributed()`` reads the variables ``torchrun`` (and
``python -m harness.launch``, and ``determined.launch.torch_distributed``) set, and reuses the
process group the script may have started itself with ``dist.init_process_group()``.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

from harness.core.distributed import DEFAULT_TIMEOUT
from harness.core.distributed import DistributedContext as _HarnessDistributed

from .._unsupported import unsupported

# Determined's default ports for a context built with ``chief_ip``; here the first one is where
# the workers' process group meets.
DEFAULT_PUB_PORT = 12360
DEFAULT_PULL_PORT = 12376


class DistributedContext(_HarnessDistributed):
    """Rank, size and object collectives of this worker among the trial's workers."""

    def __init__(
        self,
        *,
        rank: int,
        size: int,
        local_rank: int,
        local_size: int,
        cross_rank: int,
        cross_size: int,
        chief_ip: str | None = None,
        pub_port: int = DEFAULT_PUB_PORT,
        pull_port: int = DEFAULT_PULL_PORT,
        port_offset: int = 0,
        force_tcp: bool = False,
    ) -> None:
        super().__init__(
            rank=rank,
            size=size,
            local_rank=local_rank,
            local_size=local_size,
            cross_rank=cross_rank,
            cross_size=cross_size,
        )
        del pull_port, force_tcp  # one TCP rendezvous serves both directions here
        if size > 1:
            if chief_ip is None and cross_size > 1:
                raise ValueError("chief_ip is required for a DistributedContext across machines")
            address = {
                "MASTER_ADDR": chief_ip or "127.0.0.1",
                "MASTER_PORT": str(pub_port + port_offset),
            }
            self._join(address, DEFAULT_TIMEOUT)

    @classmethod
    def from_torch_distributed(cls, chief_ip: str | None = None) -> DistributedContext:
        """The worker ``torchrun``-style variables describe (``RANK``, ``WORLD_SIZE``,
        ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``)."""
        del chief_ip  # the process group's own address (MASTER_ADDR) is used
        context = cls._wrap(_HarnessDistributed.from_environ(os.environ))
        if context.size > 1:
            atexit.register(_destroy_process_group)
        return context

    @classmethod
    def _wrap(cls, inner: _HarnessDistributed) -> DistributedContext:
        """``inner`` (already joined) as this class, without joining again."""
        context = cls.__new__(cls)
        context.__dict__.update(inner.__dict__)
        return context

    @classmethod
    def from_horovod(cls, hvd: Any, chief_ip: str | None = None) -> DistributedContext:
        unsupported("DistributedContext.from_horovod", "use from_torch_distributed()")

    @classmethod
    def from_deepspeed(cls, chief_ip: str | None = None) -> DistributedContext:
        unsupported("DistributedContext.from_deepspeed", "use from_torch_distributed()")

    @classmethod
    def from_tf_config(cls) -> Any:
        unsupported("DistributedContext.from_tf_config", "use from_torch_distributed()")

    def gather_local(self, stuff: Any) -> list[Any] | None:
        unsupported("DistributedContext.gather_local", "use gather()")

    def allgather_local(self, stuff: Any) -> list[Any]:
        unsupported("DistributedContext.allgather_local", "use allgather()")

    def broadcast_local(self, stuff: Any = None) -> Any:
        unsupported("DistributedContext.broadcast_local", "use broadcast()")


def _destroy_process_group() -> None:
    """Leave the script's process group at exit. Scripts written for Determined start one and
    never destroy it; gloo's threads torn down with the interpreter then sometimes abort the
    process ("terminate called without an active exception"), failing a finished trial."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()  # no worker leaves while another still talks to it
        dist.destroy_process_group()


class DummyDistributedContext(DistributedContext):
    """One worker: every collective returns at once."""

    def __init__(self) -> None:
        super().__init__(rank=0, size=1, local_rank=0, local_size=1, cross_rank=0, cross_size=1)
