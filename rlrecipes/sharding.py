"""FSDP2 sharding of the policy over several processes.

Asked for the way accelerate users ask: `accelerate launch --use_fsdp --fsdp_version 2 …` (or a
config file saying so), or by hand `ACCELERATE_USE_FSDP=true FSDP_VERSION=2 torchrun …`. We call
torch's `fully_shard` ourselves instead of handing the model to `accelerator.prepare`, because
accelerate shards only on accelerators (on CPU it quietly runs DDP, so no test here could
exercise sharding) and because the loop needs the whole weights at moments it chooses:

- the policy (and a full fine-tune's reference) are loaded on the CPU, memory-mapped from the
  checkpoint's files, and `fully_shard` moves each layer to the device as it wraps it and keeps
  its shard: a device holds at most one whole layer (or the root's embeddings and head) beside
  the shards while loading, never a whole model;
- every decoder layer (the model's `_no_split_modules`) and the root are sharded over all
  ranks: parameters, gradients and AdamW state take 1/P of their memory per rank;
- rollouts and evaluation run inside `gathered(model)`: each parameter is all-gathered once
  and kept whole until the block ends (a full copy per rank meanwhile, as FSDP1's
  `summon_full_params`), with no collective while decoding, so ranks may generate different
  lengths and different numbers of batches;
- the weights in checkpoints and `final/` are written from a full state dict gathered to rank 0
  (torch's distributed-checkpoint state-dict API): the same files as an unsharded run; the
  optimizer state is written as each rank's shards (`optimizer/`, DCP), never gathered, so the
  ranks must share the run directory's filesystem (`save_optimizer` checks);
- the reference copy of a full fine-tune is sharded the same way.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch

from .errors import UserError


def check_launcher() -> None:
    """Refuse, before accelerate starts, what the launcher may ask for and we do not run:
    DeepSpeed and FSDP1 (FSDP2 is what we build and test)."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise UserError("ACCELERATE_USE_DEEPSPEED", "DeepSpeed is not supported (nothing here could test it)",
                        "shard with FSDP2 instead: accelerate launch --use_fsdp --fsdp_version 2 ...")
    if _fsdp_env() and os.environ.get("FSDP_VERSION", "1") != "2":
        raise UserError("FSDP_VERSION", f"FSDP version {os.environ.get('FSDP_VERSION', '1')} is not supported",
                        "launch with --fsdp_version 2 (or FSDP_VERSION=2)")


def _fsdp_env() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def requested() -> bool:
    """True when the launcher's environment asks for FSDP (2) under a distributed launcher that
    sets WORLD_SIZE (torchrun; accelerate launch with several processes), one process included:
    a mesh of one shards nothing but runs the same code (how the GPU check exercises FSDP2 on
    one GPU)."""
    return _fsdp_env() and os.environ.get("FSDP_VERSION", "1") == "2" and "WORLD_SIZE" in os.environ


def shard(model, device_type: str, num_processes: int) -> None:
    """fully_shard each decoder layer, then the root (embeddings, norm, head), in place."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh(device_type, (num_processes,))
    from .model import unwrapped
    base = unwrapped(model)   # FSDP's root: peft's `generate` calls it directly, and every forward must enter there
    blocks = set(getattr(base, "_no_split_modules", None) or ())
    if not blocks:
        raise UserError("model.name_or_path", f"{type(base).__name__} names no decoder-layer class "
                        "(_no_split_modules), so FSDP cannot shard it layer by layer", "run without FSDP (DDP)")
    for module in base.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(base, mesh=mesh)
    with torch.no_grad():   # FSDP initialises lazily at the first forward, which must enter through the root
        base(input_ids=torch.zeros(1, 1, dtype=torch.long, device=next(base.parameters()).device.type))
    base.reshard()   # the root keeps its parameters whole after a forward; the optimizer must see the shards


def is_sharded(model) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule
    from .model import unwrapped
    return isinstance(unwrapped(model), FSDPModule)


@contextlib.contextmanager
def gathered(model):
    """Every parameter whole (unsharded) inside the block, on every rank; nothing is
    re-gathered or freed by forward passes meanwhile. A no-op for an unsharded model."""
    if not is_sharded(model):
        yield model
        return
    from torch.distributed.fsdp import FSDPModule
    modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in modules:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield model
    finally:
        for m in modules:
            m.set_reshard_after_forward(True, recurse=False)
            m.reshard()


def full_state(model) -> dict:
    """The model's state dict, whole and on CPU, on rank 0; empty on the other ranks. Every rank
    must call it (it gathers)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


OPTIMIZER_DIR = "optimizer"   # in a checkpoint of a sharded run: the optimizer state as each rank's shards


def save_optimizer(model, optimizer, folder: Path) -> None:
    """The optimizer state as each rank's own shards (torch.distributed.checkpoint, DCP): no rank
    gathers it. AdamW keeps two float32 moments per weight, 8 bytes per parameter; gathered
    whole on rank 0 at every checkpoint, as before 2026-12-04, they were most of that rank's peak
    memory (benchmarks/fsdp_memory.py). Every rank calls it with the same `folder`."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=str(folder))
    ranks = dist.get_world_size() if dist.is_initialized() else 1
    written = len(list(folder.glob("*.distcp")))   # one file per rank (DCP's FileSystemWriter)
    if written < ranks:
        raise UserError("checkpoint", f"{folder} holds the optimizer shards of {written} of {ranks} processes: "
                        "the ranks do not share this filesystem",
                        "put the run directory (--output-dir) on storage every node mounts")


def load_optimizer(model, optimizer, checkpoint: Path) -> None:
    """Restore an optimizer from a checkpoint directory: its `optimizer/` shards (sharded runs;
    DCP reshards, so any number of processes, or a plain one, may resume them), else its
    `optimizer.pt`: a plain `state_dict()` (unsharded runs) or the full, name-keyed state that
    sharded runs wrote before 2026-12-04."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                         set_optimizer_state_dict)
    if (checkpoint / OPTIMIZER_DIR).is_dir():
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp
        state = {"optimizer": get_optimizer_state_dict(model, optimizer)}   # initialised (zero) moments to fill
        single = not (dist.is_available() and dist.is_initialized())
        with warnings.catch_warnings():   # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
            dcp.load(state, checkpoint_id=str(checkpoint / OPTIMIZER_DIR), no_dist=single)
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
        return
    state = torch.load(checkpoint / "optimizer.pt", weights_only=False)
    if not any(isinstance(k, str) for k in state.get("state", {})):
        optimizer.load_state_dict(state)
        return
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def clip_grad_norm_(params, max_norm: float) -> torch.Tensor:
    """Gradient clipping for sharded (DTensor) gradients, written out so that it does not depend
    on how accelerate's or torch's versions treat DTensors: the squares of every rank's gradient
    shards summed over ranks, then every shard scaled by the same factor; returns the norm."""
    grads = [p.grad for p in params if p.grad is not None]
    local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
    total = torch.stack([g.detach().float().pow(2).sum() for g in local]).sum() if local else torch.zeros(())
    torch.distributed.all_reduce(total)
    norm = total.sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in local:
        g.mul_(scale.to(g.dtype))
    return norm


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a collective); any other tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
