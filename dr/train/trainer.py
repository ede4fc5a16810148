"""The training loop of ``dr-train forward|inverse`` on accelerate (DESIGN sections 5 and 8).

One process per device (``accelerate launch`` for several GPUs or nodes). Each optimiser step
takes ``grad_accum`` batches; every draw of step s on rank r comes from a generator seeded by
(seed, s, r, micro-batch), and the data stream's position is the batch count, so a run resumed
from a checkpoint continues exactly as if it had not stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from dr.models.folders import latest_checkpoint
from dr.train.checkpoint import clear_partial, load_trainer_state, module_weights, save_checkpoint, step_name
from dr.train.config import TrainConfig
from dr.train.data import ClipDataset, collate, produced_per_worker
from dr.train.ema import Ema
from dr.train.latent_cache import downsampling
from dr.train.metrics import MetricsLog
from dr.train.objectives import make_objective

KINDS = ("forward", "inverse", "env-encoder", "cycle")


@dataclass
class StepReport:
    step: int
    max_steps: int
    loss: float
    lr: float
    clips_per_s: float


def clip_generators(seed: int, step: int, micro: int, first: int, count: int) -> list[torch.Generator]:
    """One generator per clip of a micro-batch, seeded by (seed, step, micro-batch, the clip's place
    in the global batch): the draws are the same however many processes share the batch."""
    return [torch.Generator().manual_seed(((seed * 1_000_003 + step) * 101 + micro) * 100_003 + first + i)
            for i in range(count)]


def optimiser_step(acc, objective, opt, sched, params, batches: list[dict], seed: int, step: int,
                   max_grad_norm: float) -> float:
    """One optimiser step over ``batches`` (the micro-batches of this process); returns the loss
    averaged over micro-batches and processes. DDP averages the gradients, so with equal local
    batches this is the step on the global batch."""
    total = 0.0
    for micro, batch in enumerate(batches):
        b = len(batch["key"])
        gens = clip_generators(seed, step, micro, acc.process_index * b, b)
        sync = acc.no_sync(objective) if micro < len(batches) - 1 else contextlib.nullcontext()
        with sync:
            loss = objective(batch, gens) / len(batches)
            acc.backward(loss)
        total += float(loss.detach())
    acc.clip_grad_norm_(params, max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(acc.reduce(torch.tensor(total, device=acc.device), reduction="mean"))


def precision(cfg: TrainConfig) -> str:
    """accelerate's mixed_precision for the config on this machine."""
    p = cfg.train.precision
    if p == "auto":
        if not torch.cuda.is_available():
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if p != "fp32" and not torch.cuda.is_available():
        return "no"  # CPUs train in fp32
    return {"fp32": "no"}.get(p, p)


def trained_modules(kind: str, pipeline) -> dict[str, torch.nn.Module]:
    """{name: module} of what a run trains; a name is the module's folder in the checkpoint's pipeline/
    (a cycle run's: forward/unet, inverse/unet, ...)."""
    if kind == "env-encoder":
        return {"env_encoder": pipeline.env_encoder, "env_decoder": pipeline.env_decoder}
    if kind == "cycle":
        return {**{f"forward/{k}": m for k, m in trained_modules("forward", pipeline.forward).items()},
                **{f"inverse/{k}": m for k, m in trained_modules("inverse", pipeline.inverse).items()}}
    if kind == "forward":
        if not any(p.requires_grad for p in pipeline.env_encoder.parameters()):  # a pretrained one, frozen
            return {"unet": pipeline.unet}
        return {"unet": pipeline.unet, "env_encoder": pipeline.env_encoder}
    return {"unet": pipeline.unet, "pass_embedding": pipeline.pass_embedding}


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    warm, total, cosine = cfg.optim.warmup_steps, cfg.train.max_steps, cfg.optim.schedule == "cosine"

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if not cosine:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    return f


def optimiser(cfg: TrainConfig, modules) -> tuple[list, torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """(trained parameters, AdamW over them, its warm-up and schedule) for the modules a run trains."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    return params, opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))


def train(kind: str, pipeline, cfg: TrainConfig, data: Sequence[str], out: Path,
          on_step: Callable[[StepReport], None] | None = None, latents: dict[str, str] | None = None) -> dict:
    """Train ``pipeline`` (a new or resumed renderer) on the clips of ``data`` into the run folder
    ``out``; ``latents`` {shard url: cached latents file} (dr.train.latent_cache.caches_for) for the
    shards read from their cache. Returns {'step', 'checkpoint', 'resumed_from'}."""
    from accelerate import Accelerator

    acc = Accelerator(mixed_precision=precision(cfg), cpu=not torch.cuda.is_available())
    modules = trained_modules(kind, pipeline)
    if cfg.model.gradient_checkpointing and kind != "env-encoder":
        for unet in pipeline.unets if kind == "cycle" else [pipeline.unet]:
            unet.enable_gradient_checkpointing()
    ckroot = out / "checkpoints"
    if acc.is_main_process:
        clear_partial(ckroot)
    acc.wait_for_everyone()  # every process resumes from what the first one left
    latest = latest_checkpoint(ckroot)
    state = None
    if latest is not None:
        state = load_trainer_state(latest)
        was = int(state.get("world_size", 1))
        if was != acc.num_processes:
            raise ValueError(f"{latest} was written by {was} training process(es); this launch has "
                             f"{acc.num_processes}: resume with {was} (each process's place in the data stream "
                             f"depends on the count)")
        for name, module in modules.items():
            module.load_state_dict(module_weights(latest, name, raw=True))
    pipeline.to(acc.device)
    ema = None
    if cfg.train.ema_decay > 0:
        ema = Ema(modules, cfg.train.ema_decay)
        if latest is not None:
            for name in modules:
                ema.load(name, module_weights(latest, name, raw=False))
    objective = make_objective(kind, pipeline, cfg)
    params, opt, sched = optimiser(cfg, modules.values())
    step, batches = 0, 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["lr_scheduler"])
        step, batches = int(state["step"]), int(state["batches"])
    objective, opt = acc.prepare(objective, opt)

    d = cfg.data
    workers = d.workers
    dataset = ClipDataset(data, d.frames, d.height, d.width,
                          (d.env_height, d.env_width) if kind in ("forward", "env-encoder", "cycle") else None,
                          seed=cfg.train.seed, holdout_fraction=d.holdout_fraction, shuffle_buffer=d.shuffle_buffer,
                          rank=acc.process_index, world_size=acc.num_processes,
                          skip=produced_per_worker(batches, d.batch_size, workers, acc.process_index),
                          latents=latents, latent_factor=downsampling(pipeline.vae) if kind != "env-encoder" else 8,
                          env_only=kind == "env-encoder", zoom=d.zoom, flip=d.flip)
    loader = torch.utils.data.DataLoader(dataset, batch_size=d.batch_size, num_workers=workers, collate_fn=collate,
                                         prefetch_factor=4 if workers else None, persistent_workers=False)
    batch_iter = iter(loader)
    log = MetricsLog(out / "logs", enabled=acc.is_main_process, resume_step=step if latest else None)
    previews = None
    if cfg.train.sample_every and acc.is_main_process and kind in ("forward", "inverse"):
        from dr.train.sample import held_out_clips

        previews = held_out_clips(data, d.holdout_fraction, cfg.train.sample_clips)
        if not previews:
            raise ValueError(f"train.sample_every is set but no clip is held out (data.holdout_fraction "
                             f"{d.holdout_fraction}): raise it, or set train.sample_every=0")
    accum = cfg.optim.grad_accum
    window: list[float] = []
    t_log = time.perf_counter()
    wait = 0.0
    clips = 0
    last_ckpt = None
    objective.train()
    try:
        while step < cfg.train.max_steps:
            micro_batches = []
            for _ in range(accum):
                t0 = time.perf_counter()
                micro_batches.append(next(batch_iter))
                wait += time.perf_counter() - t0
                batches += 1
                clips += len(micro_batches[-1]["key"]) * acc.num_processes
            loss_mean = optimiser_step(acc, objective, opt, sched, params, micro_batches, cfg.train.seed, step,
                                       cfg.optim.max_grad_norm)
            step += 1
            if ema is not None:
                ema.update(step)
            window.append(loss_mean)
            if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                dt = time.perf_counter() - t_log
                rec = {"step": step, "loss": sum(window) / len(window), "lr": sched.get_last_lr()[0],
                       "clips_per_s": clips / dt if dt > 0 else 0.0, "data_wait": wait / dt if dt > 0 else 0.0,
                       "step_loss": loss_mean}
                log.write(rec)
                if on_step is not None:
                    on_step(StepReport(step, cfg.train.max_steps, rec["loss"], rec["lr"], rec["clips_per_s"]))
                window, clips, wait, t_log = [], 0, 0.0, time.perf_counter()
            if previews and step % cfg.train.sample_every == 0:
                _preview(kind, pipeline, modules, ema, previews, cfg, out / "samples" / step_name(step))
                acc.wait_for_everyone()
            elif cfg.train.sample_every and step % cfg.train.sample_every == 0:
                acc.wait_for_everyone()
            if step % cfg.train.checkpoint_every == 0 or step == cfg.train.max_steps:
                acc.wait_for_everyone()
                if acc.is_main_process:
                    last_ckpt = save_checkpoint(ckroot, step, pipeline, {
                        "optimizer": opt.state_dict() if not hasattr(opt, "optimizer") else opt.optimizer.state_dict(),
                        "lr_scheduler": sched.state_dict(), "step": step, "batches": batches,
                        "world_size": acc.num_processes}, cfg.train.checkpoint_limit, ema=ema)
                acc.wait_for_everyone()
    finally:
        log.close()
        del batch_iter
    return {"step": step, "checkpoint": str(last_ckpt or latest_checkpoint(ckroot) or ""),
            "resumed_from": str(latest) if latest else None}


def _preview(kind: str, pipeline, modules: dict, ema, clips: list, cfg: TrainConfig, folder: Path) -> None:
    """samples/step-N/: the held-out previews, made with the weights a checkpoint would hold (the
    average, with an EMA); the training state is left as it was."""
    from dr.train.sample import write_step_samples

    for m in modules.values():
        m.eval()
    try:
        with ema.swapped() if ema is not None else contextlib.nullcontext():
            steps = 1 if cfg.train.single_step else cfg.train.sample_steps  # one evaluation is all it takes
            write_step_samples(kind, pipeline, clips, cfg.data, folder, steps, cfg.train.seed)
    finally:
        for m in modules.values():
            m.train()


def read_metrics(out: Path) -> list[dict]:
    path = out / "logs" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
