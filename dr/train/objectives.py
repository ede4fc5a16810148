"""What one training step computes for each renderer: batch -> loss, as an nn.Module (so DDP
wraps exactly the trained parts). The VAE is frozen and kept outside the module's parameters; a
batch from the latent cache brings its latents ('latent_<pass>') and is not encoded again."""

from __future__ import annotations

import torch
from torch import nn

from dr.models import edm
from dr.models.noise import input_noise
from dr.models.pass_embedding import INVERSE_PASSES, pass_ids
from dr.models.pipelines import FORWARD_CONDITIONS, encode_frames, single_step_x0
from dr.train.loss import dropout_mask, edm_loss, pass_loss


class _Objective(nn.Module):
    def __init__(self, pipeline, noise: tuple[float, float]):
        super().__init__()
        self.__dict__["pipeline"] = pipeline  # not a submodule: its VAE is frozen and not trained
        pipeline.vae.requires_grad_(False).eval()
        self.noise = noise  # (mean, std) of ln sigma

    @torch.no_grad()
    def latents(self, batch: dict, name: str) -> torch.Tensor:
        """The scaled VAE latents of pass ``name``: the batch's cached ones, else encoded now."""
        vae = self.pipeline.vae
        cached = batch.get(f"latent_{name}")
        if cached is not None:
            return cached.to(vae.device).float()
        return encode_frames(vae, batch[name].to(vae.device, vae.dtype)).float()


class ForwardObjective(_Objective):
    """G-buffer latents and env tokens -> the rgb latents; conditions dropped per clip with
    probability ``dropout`` (zero latents and zero env tokens, the pipeline's unconditional branch)."""

    def __init__(self, pipeline, dropout: float, noise: tuple[float, float] = (edm.P_MEAN, edm.P_STD)):
        super().__init__(pipeline, noise)
        self.unet, self.env_encoder, self.dropout = pipeline.unet, pipeline.env_encoder, dropout

    def forward(self, batch: dict, generators: list[torch.Generator]) -> torch.Tensor:
        x0 = self.latents(batch, "rgb")
        cond = torch.cat([self.latents(batch, p) for p in FORWARD_CONDITIONS], dim=2)
        b, t = x0.shape[:2]
        keep = dropout_mask(self.dropout, generators).to(x0.device)
        cond = cond * keep.reshape(b, 1, 1, 1, 1)
        env = batch["env"].to(x0.device)
        tokens = self.env_encoder.tokens(env.flatten(0, 1))
        frame_keep = keep.repeat_interleave(t).reshape(b * t, 1, 1)
        tokens = [tok * frame_keep.to(tok.dtype) for tok in tokens]
        return edm_loss(self.unet, x0, cond, tokens, generators, *self.noise)


class InverseObjective(_Objective):
    """The rgb latents and a pass embedding -> that pass's latents; every pass of every clip in
    one batch (as the pipeline runs them)."""

    def __init__(self, pipeline, passes=INVERSE_PASSES, noise: tuple[float, float] = (edm.P_MEAN, edm.P_STD)):
        super().__init__(pipeline, noise)
        self.unet, self.pass_embedding, self.passes = pipeline.unet, pipeline.pass_embedding, tuple(passes)

    def forward(self, batch: dict, generators: list[torch.Generator]) -> torch.Tensor:
        video = self.latents(batch, "rgb")
        b = video.shape[0]
        x0 = torch.cat([self.latents(batch, p) for p in self.passes])            # pass-major (P*B, ...)
        cond = video.repeat(len(self.passes), 1, 1, 1, 1)
        ids = pass_ids(self.passes).to(video.device).repeat_interleave(b)
        # rows are pass-major: each clip's generator serves its five rows in pass order
        return edm_loss(self.unet, x0, cond, self.pass_embedding(ids), list(generators) * len(self.passes), *self.noise)


def decode_for_loss(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (N, T, 4, h, w) -> views (N, T, 3, H, W) through the frozen VAE decoder, with the
    graph kept (the single-step losses are taken on its output): every clip in one call."""
    n, t = latents.shape[:2]
    z = latents.flatten(0, 1).to(vae.dtype) / vae.config.scaling_factor
    return vae.decode(z, num_frames=t).sample.float().unflatten(0, (n, t))


class SingleStepInverseObjective(_Objective):
    """Ouroboros' single-step inverse renderer: every pass of every clip from the input noise at
    SIGMA_MAX in one evaluation (dr.models.pipelines.single_step_x0, as the pipeline runs it), x0 decoded
    by the frozen VAE decoder, and the pixel losses of dr.train.loss.pass_loss over the surface mask
    (normal angle, scale-and-shift invariant depth, squared error), summed over the passes."""

    def __init__(self, pipeline, passes=INVERSE_PASSES, noise_kind: str = "gaussian"):
        super().__init__(pipeline, (edm.P_MEAN, edm.P_STD))
        self.unet, self.pass_embedding, self.passes = pipeline.unet, pipeline.pass_embedding, tuple(passes)
        self.noise_kind = noise_kind

    def forward(self, batch: dict, generators: list[torch.Generator]) -> torch.Tensor:
        video = self.latents(batch, "rgb")
        b, p = video.shape[0], len(self.passes)
        if len(generators) != b:
            raise ValueError(f"{len(generators)} generators for a batch of {b}")
        noise = torch.stack([input_noise(self.noise_kind, video.shape[1:], g) for g in generators]).to(video)
        cond = video.repeat(p, 1, 1, 1, 1)                                   # pass-major (P*B, ...)
        ids = pass_ids(self.passes).to(video.device).repeat_interleave(b)
        x0 = single_step_x0(self.unet, noise.repeat(p, 1, 1, 1, 1), cond, self.pass_embedding(ids))
        views = decode_for_loss(self.pipeline.vae, x0)
        mask = batch["mask"].to(video.device)
        return sum(pass_loss(name, views[i * b:(i + 1) * b], batch[name].to(video.device), mask)
                   for i, name in enumerate(self.passes))


class EnvObjective(nn.Module):
    """Env-encoder pretraining (``dr-train env-encoder``): the encoder's last map, decoded, against the env
    encodings it came from (mean squared error)."""

    def __init__(self, autoencoder):
        super().__init__()
        self.env_encoder, self.env_decoder = autoencoder.env_encoder, autoencoder.env_decoder

    def forward(self, batch: dict, generators: list[torch.Generator]) -> torch.Tensor:
        env = batch["env"].to(next(self.env_encoder.parameters()).device).flatten(0, 1)
        rec = self.env_decoder(self.env_encoder(env)[-1])
        return ((rec - env) ** 2).mean()


def make_objective(kind: str, pipeline, cfg) -> nn.Module:
    """The objective of ``dr-train <kind>`` under a TrainConfig ``cfg``."""
    noise = (cfg.train.noise_mean, cfg.train.noise_std)
    if kind == "forward":
        return ForwardObjective(pipeline, cfg.train.condition_dropout, noise)
    if kind == "inverse" and cfg.train.single_step:
        return SingleStepInverseObjective(pipeline, noise_kind=cfg.train.input_noise)
    if kind == "inverse":
        return InverseObjective(pipeline, noise=noise)
    if kind == "env-encoder":
        return EnvObjective(pipeline)
    raise ValueError(f"no objective for {kind!r}")
