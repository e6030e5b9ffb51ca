"""Tensor parallelism: one process per rank; rank 0 (the caller's process) drives the others.

Rank 0 pickles each call (method name + arguments, host data only) into a shared-memory buffer and
wakes the workers, which run the same method on their ModelRunner, so every rank executes the same
collectives in the same order. Collectives run over NCCL on GPUs and gloo on the CPU.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import socket
from multiprocessing.shared_memory import SharedMemory
from multiprocessing.synchronize import Event

import torch
import torch.distributed as dist

from .config import EngineConfig
from .parallel import TPGroup

SHM_BYTES = 1 << 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_tp(config: EngineConfig, rank: int, port: int) -> TPGroup:
    if config.tensor_parallel_size == 1:
        return TPGroup()
    backend = "nccl" if config.device == "cuda" else "gloo"
    if config.device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=config.tensor_parallel_size)
    return TPGroup(rank=rank, size=config.tensor_parallel_size, group=dist.group.WORLD)


class Channel:
    """Rank 0 -> workers call channel over shared memory + one event per worker."""

    def __init__(self, name: str, events: list[Event], create: bool):
        self.shm = SharedMemory(name=name, create=create, size=SHM_BYTES if create else 0)
        self.events, self.owner = events, create

    def send(self, method: str, *args) -> None:
        data = pickle.dumps((method, args))
        if len(data) + 4 > SHM_BYTES:
            raise RuntimeError(f"ssdk: a {method} call of {len(data)} bytes exceeds the {SHM_BYTES}-byte channel")
        self.shm.buf[:4] = len(data).to_bytes(4, "little")
        self.shm.buf[4:4 + len(data)] = data
        for event in self.events:
            event.set()

    def receive(self) -> tuple[str, tuple]:
        event = self.events[0]
        event.wait()
        size = int.from_bytes(self.shm.buf[:4], "little")
        method, args = pickle.loads(self.shm.buf[4:4 + size])
        event.clear()
        return method, args

    def close(self) -> None:
        self.shm.close()
        if self.owner:
            self.shm.unlink()


def _worker_main(config: EngineConfig, rank: int, port: int, shm_name: str, event: Event) -> None:
    from .model_runner import ModelRunner

    tp = init_tp(config, rank, port)
    runner = ModelRunner(config, rank, tp)
    dist.barrier()  # the channel exists once every rank has loaded
    channel = Channel(shm_name, [event], create=False)
    try:
        while True:
            method, args = channel.receive()
            if method == "exit":
                break
            getattr(runner, method)(*args)
    finally:
        channel.close()
        runner.release_graphs()
        dist.destroy_process_group()


class Workers:
    """Spawns ranks 1..tp-1; ``call`` runs a ModelRunner method on all of them (rank 0 runs its own)."""

    def __init__(self, config: EngineConfig):
        self.port = free_port()
        ctx = mp.get_context("spawn")
        self.events = [ctx.Event() for _ in range(1, config.tensor_parallel_size)]
        self.shm_name = f"ssdk_{os.getpid()}_{self.port}"
        self.channel = Channel(self.shm_name, self.events, create=True)
        self.processes = [ctx.Process(target=_worker_main, args=(config, rank, self.port, self.shm_name, event),
                                      daemon=True) for rank, event in enumerate(self.events, 1)]
        for process in self.processes:
            process.start()

    def call(self, method: str, *args) -> None:
        self.channel.send(method, *args)

    def close(self) -> None:
        """Stop the workers and leave the process group with them: NCCL's teardown waits for every
        rank, so rank 0 destroys its group before joining (joining first stalled each close by the
        join timeout). Every rank releases its CUDA graphs first (ModelRunner.release_graphs; rank 0's
        are released by LLM.close)."""
        self.call("exit")
        dist.destroy_process_group()
        for process in self.processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
        self.channel.close()
