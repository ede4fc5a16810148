"""The typed config of ``dr-train forward|inverse`` (DESIGN section 8's TrainConfig). Its presets are
in dr/config.py with every command's."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dr.config import CommandConfig, Section

class DataSection(Section):
    height: int = Field(512, ge=8, description="training frame height, pixels (frames are resized and cropped to it)")
    width: int = Field(512, ge=8, description="training frame width, pixels")
    frames: int = Field(24, ge=1, description="frames per training clip, drawn from longer clips at a random start")
    env_height: int = Field(512, ge=8, description="env encoding height, pixels (forward renderer)")
    env_width: int = Field(512, ge=8, description="env encoding width, pixels (forward renderer)")
    batch_size: int = Field(1, ge=1, description="clips per step per process (before gradient accumulation)")
    workers: int = Field(4, ge=0, description="DataLoader worker processes per training process (0: in-process)")
    shuffle_buffer: int = Field(64, ge=1, description="clips held in each data worker's shuffle buffer")
    latent_cache: bool = Field(True, description="read VAE latents from the cache `dr-train cache-latents` made "
                                                 "beside a run's shards, where there is one for this base and size")
    zoom: float = Field(1.0, ge=1.0, le=4.0, description="augmentation: each clip resized to cover the training "
                                                          "size times a factor drawn from [1, zoom) before its crop "
                                                          "(1: off); reads pixels, not the latent cache")
    flip: bool = Field(False, description="augmentation of the inverse renderer: half the clips mirrored left-right, "
                                          "the normal's x negated; reads pixels, not the latent cache")
    holdout_fraction: float = Field(0.01, ge=0.0, lt=1.0,
                                    description="share of clips held out for evaluation, chosen by a hash of the clip id")


class ModelSection(Section):
    env_stem_channels: list[int] = Field([16, 32, 96, 256], min_length=1,
                                         description="env encoder stem widths; each step after the first halves the size")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (less memory)")


class OptimSection(Section):
    lr: float = Field(1.0e-5, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(500, ge=0, description="linear warm-up, optimiser steps")
    schedule: Literal["constant", "cosine"] = Field("constant", description="learning rate after warm-up")
    grad_accum: int = Field(1, ge=1, description="batches accumulated per optimiser step")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")


class TrainSection(Section):
    max_steps: int = Field(100_000, ge=1, description="optimiser steps of the run")
    seed: int = Field(0, ge=0, description="seed of every draw (noise, levels, data order, crops)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="mixed precision: auto = bf16 on GPUs that have it, fp16 on other GPUs, fp32 on CPUs")
    condition_dropout: float = Field(0.1, ge=0.0, le=1.0,
                                     description="share of clips trained without conditions (classifier-free guidance)")
    noise_mean: float = Field(0.7, description="mean of ln sigma, the training noise level (SVD's EDM recipe: 0.7); "
                                               "higher trains more at the high levels where sampling starts")
    noise_std: float = Field(1.6, gt=0, description="standard deviation of ln sigma (SVD's EDM recipe: 1.6)")
    single_step: bool = Field(False, description="train a single-step renderer (Ouroboros): one evaluation at the "
                                                 "largest noise level, x0 decoded by the frozen VAE, losses in pixel "
                                                 "space (normal angle, scale-and-shift invariant depth, squared error "
                                                 "for the other passes and rgb), no guidance; `--single-step` sets it")
    input_noise: Literal["gaussian", "pyramid", "zero"] = Field(
        "gaussian", description="what a single-step renderer sees in its noisy-latent channels: white noise, "
                                "pyramid noise (coarser levels, discount 0.9) or zeros (deterministic)")
    cycle_weight: float = Field(1.0, ge=0.0, description="`dr-train cycle`: weight of the two cycle losses "
                                                        "(forward(inverse(I)) against I, inverse(forward(G)) against "
                                                        "G) beside the two task losses")
    freeze_env_encoder: bool = Field(False, description="forward renderer: keep the env encoder's weights as they are "
                                                        "and train the UNet alone (`--env-encoder` sets it)")
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0,
                             description="exponential moving average of the trained weights, decay per optimiser step "
                                         "(0: off); with it a checkpoint's pipeline/ holds the average")
    checkpoint_every: int = Field(1000, ge=1, description="optimiser steps between checkpoints")
    checkpoint_limit: int = Field(3, ge=1, description="checkpoints kept (the newest)")
    log_every: int = Field(10, ge=1, description="optimiser steps between metrics.jsonl lines")
    sample_every: int = Field(0, ge=0, description="optimiser steps between previews of held-out clips in "
                                                   "samples/step-NNNNNNN/ (0: none)")
    sample_clips: int = Field(2, ge=1, description="held-out clips in each preview")
    sample_steps: int = Field(20, ge=1, description="sampling steps of the previews (a single-step renderer takes 1)")


class TrainConfig(CommandConfig):
    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    optim: OptimSection = OptimSection()
    train: TrainSection = TrainSection()
