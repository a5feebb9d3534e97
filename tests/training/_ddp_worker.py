"""Workers for the multi-process tests (fixture code, imported by name in spawned processes), and a spy
that records what every torch.distributed collective is handed."""

from __future__ import annotations

import json
import os
import socket

import safetensors.torch
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor", "broadcast", "barrier")
CASES = ("info_nce", "nt_xent", "supcon", "clip_learned_temperature", "byol", "moco", "barlow_twins")
BATCH, DIM = 8, 6


def setup(case: str):
    """The same model, objective, optimiser and global batch in every process."""
    from contrastlab.encoders.build import build_model
    from contrastlab.objectives.info_nce import InfoNCE, NTXent
    from contrastlab.objectives.methods import BYOL, MoCo
    from contrastlab.objectives.queue import NegativeQueue
    from contrastlab.objectives.redundancy import BarlowTwinsLoss
    from contrastlab.objectives.supcon import SupCon
    from contrastlab.objectives.temperature import LearnableTemperature
    from contrastlab.training.optim import build_optimizer
    from contrastlab.training.step import LossModule

    torch.manual_seed(0)
    temperature = LearnableTemperature(0.2) if case == "clip_learned_temperature" else None
    model = build_model(
        {"view1": (DIM,), "view2": (DIM,)},
        {"view1": "x", "view2": "x"},
        encoder=("mlp", {"hidden": [16], "batch_norm": False}),
        head="mlp",
        head_options={"hidden": 16, "batch_norm": False},
        dim=4,
        temperature=temperature,
        # momentum targets (constant 0.5 so one step moves them visibly), a predictor, a queue
        momentum=(0.5, "constant") if case in ("byol", "moco") else None,
        predictor=("mlp", {"hidden": 8, "batch_norm": False}) if case == "byol" else None,
        queue=NegativeQueue(12, 4) if case == "moco" else None,
    )
    objective, kind = {
        "info_nce": (InfoNCE(temperature=0.3), "pairwise"),
        "nt_xent": (NTXent(temperature=0.3), "pairwise"),
        "supcon": (SupCon(temperature=0.3), "supervised"),
        "clip_learned_temperature": (InfoNCE(symmetric=True), "pairwise"),
        "byol": (BYOL(), "method"),
        "moco": (MoCo(temperature=0.3), "method"),
        "barlow_twins": (BarlowTwinsLoss(), "pairwise"),
    }[case]
    module = LossModule(model, objective, reader=kind, view_names=["view1", "view2"])
    optimizer = build_optimizer("sgd", [module], lr=0.5, momentum=0.0)
    g = torch.Generator().manual_seed(1)
    views = {v: torch.randn(BATCH, DIM, generator=g) for v in ("view1", "view2")}
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3])
    return module, optimizer, views, labels


def step(module, wrapped, optimizer, views, labels, index):
    """Two optimiser steps (the second meets the first one's queued keys); the second step's loss."""
    for done in (1, 2):
        loss, _ = wrapped(views, labels=labels, index=index + 100 * (done - 1))  # other items' ids the second time
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        module.after_step(done, 10)  # EMA of the targets, the queue's enqueue, clamps: the same on every process
    return loss.detach()


def single(case: str) -> dict[str, torch.Tensor]:
    module, optimizer, views, labels = setup(case)
    loss = step(module, module, optimizer, views, labels, torch.arange(BATCH))
    return {"loss": loss.reshape(1), **{k: v.detach().clone() for k, v in module.state_dict().items()}}


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for case in CASES:
            module, optimizer, views, labels = setup(case)
            rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
            local = {v: x[rows] for v, x in views.items()}
            wrapped = DistributedDataParallel(module)
            loss = step(module, wrapped, optimizer, local, labels[rows], torch.arange(BATCH)[rows])
            state = {"loss": loss.reshape(1), **{k: v.detach().clone() for k, v in module.state_dict().items()}}
            name = f"{case}.safetensors" if rank == 0 else f"{case}.rank{rank}.safetensors"
            safetensors.torch.save_file(state, os.path.join(out_dir, name))
            del wrapped
        train_loop(rank, world, port, out_dir)
        read_epoch(rank, world, out_dir)
        dist.barrier()  # nobody tears the group down while another process still uses it
    finally:
        dist.destroy_process_group()
    # A clean finish: leave without running C++ destructors of gloo's threads, which can abort
    # ("terminate called without an active exception") while the interpreter shuts down.
    os._exit(0)


def train_config():
    from _train_fixtures import config

    return config(steps=12, **{"model.encoder.options": "{hidden: [32], batch_norm: false}", "checkpoint.every": 6})


def train_loop(rank: int, world: int, port: int, out_dir: str) -> None:
    """The whole loop under DDP: torchrun's variables in the environment, deterministic views."""
    from _train_fixtures import Clusters, NoisyViews, ensure_objectives

    from contrastlab.training import train

    ensure_objectives()
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    try:
        train(train_config(), os.path.join(out_dir, "loop"), dataset=Clusters(), views=NoisyViews(sigma=0.0))
    finally:
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            os.environ.pop(key)


def read_epoch(rank: int, world: int, out_dir: str) -> None:
    """One epoch of an image folder as the loop reads it (loader workers, this rank's rows of each global batch);
    rank 0 writes every rank's item indices to ``epoch.json``."""
    import json

    from contrastlab.data.loading import Batches, LoaderOptions
    from contrastlab.data.user import load_image_folder
    from contrastlab.training.sampler import ShardedBatches

    ds = load_image_folder(root=os.path.join(out_dir, "imgs"), test_fraction=0.1)
    sampler = ShardedBatches(len(ds), 8, seed=5, rank=rank, world_size=world)
    batches = Batches(ds, sampler, 0, sampler.steps_per_epoch, options=LoaderOptions(num_workers=1),
                      device=torch.device("cpu"), seed=rank, rank=rank, world_size=world)
    mine = [int(i) for _, batch in batches for i in batch.index]
    every = [None] * world
    dist.all_gather_object(every, mine)
    if rank == 0:
        with open(os.path.join(out_dir, "epoch.json"), "w") as f:
            json.dump({"items": len(ds), "read": every}, f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collective_spies(calls: list, *, stop: type[Exception] | None = None) -> dict:
    """Stand-ins for torch.distributed's collectives (by name) that append ``(name, devices, device_ids)`` to
    ``calls``: the devices of every tensor handed in (inputs and outputs), and ``barrier``'s ``device_ids``.
    They then run the real collective; with ``stop``, a collective that would need a device or a group this
    machine lacks, they run nothing: they raise ``stop`` when handed tensors, and return otherwise."""

    def spy_on(name: str):
        real = getattr(dist, name)

        def spy(*args, **kwargs):
            flat = [t for a in (*args, *kwargs.values()) for t in (a if isinstance(a, (list, tuple)) else [a])]
            tensors = [t for t in flat if isinstance(t, torch.Tensor)]
            calls.append((name, [str(t.device) for t in tensors], kwargs.get("device_ids")))
            if stop is None:
                return real(*args, **kwargs)
            if tensors:
                raise stop(name)
            return None

        return spy

    return {name: spy_on(name) for name in COLLECTIVES}


def forced_config(device: str):
    """A few steps, a loss logged at each, a checkpoint at the end (its random states are gathered); BatchNorm
    in the encoder, which the loop turns into SyncBatchNorm on CUDA."""
    from _train_fixtures import config

    return config(steps=3, device=device, **{"log.every": 1, "checkpoint.every": 3,
                                             "model.encoder.options": "{hidden: [32], batch_norm: true}"})


def forced_loop(rank: int, world: int, port: int, out_dir: str, device: str) -> None:
    """The whole loop in a process group formed as under ``CONTRASTLAB_DDP=1 torchrun --nproc-per-node WORLD``
    (gloo on CPU, NCCL on CUDA), every collective spied on; rank r writes what they were handed to
    ``collectives.{r}.json``."""
    from _train_fixtures import Clusters, NoisyViews, ensure_objectives

    from contrastlab.training import train

    ensure_objectives()
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), CONTRASTLAB_DDP="1")
    calls: list = []
    for name, spy in collective_spies(calls).items():
        setattr(dist, name, spy)
    try:
        train(forced_config(device), os.path.join(out_dir, "forced"), dataset=Clusters(), views=NoisyViews(sigma=0.0))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    with open(os.path.join(out_dir, f"collectives.{rank}.json"), "w") as f:
        json.dump(calls, f)
    os._exit(0)  # see worker: no destructors of gloo's threads at interpreter shutdown
