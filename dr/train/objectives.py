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


def inverse_x0(unet, pass_embedding, passes, video: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A single-step inverse renderer's x0 latents (P*B, T, 4, h, w), pass-major, of every pass of every
    clip in one evaluation: the video latents (B, T, 4, h, w) beside the input noise of each clip (the
    same for its passes, as the pipeline runs them)."""
    p, b = len(passes), video.shape[0]
    ids = pass_ids(passes).to(video.device).repeat_interleave(b)
    return single_step_x0(unet, noise.repeat(p, 1, 1, 1, 1), video.repeat(p, 1, 1, 1, 1), pass_embedding(ids))


def forward_x0(unet, env_encoder, cond: torch.Tensor, env: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A single-step forward renderer's x0 rgb latents (B, T, 4, h, w): G-buffer latents (B, T, 20, h, w)
    and env encodings (B, T, 9, He, We) beside the input noise, one evaluation, no guidance."""
    return single_step_x0(unet, noise, cond, env_encoder.tokens(env.flatten(0, 1)))


def pass_losses(passes, views: torch.Tensor, batch: dict, b: int, mask: torch.Tensor) -> torch.Tensor:
    """The sum over ``passes`` of dr.train.loss.pass_loss of pass-major decoded views (P*B, ...)."""
    return sum(pass_loss(name, views[i * b:(i + 1) * b], batch[name].to(views.device), mask)
               for i, name in enumerate(passes))


def rgb_loss(views: torch.Tensor, batch: dict) -> torch.Tensor:
    """Squared error of decoded rgb views against the batch's display view, over the whole frame."""
    rgb = batch["rgb"].to(views.device)
    return pass_loss("rgb", views, rgb, torch.ones_like(rgb[:, :, :1]))


def _clip_noise(kind: str, generators, shape, like: torch.Tensor) -> torch.Tensor:
    return torch.stack([input_noise(kind, shape, g) for g in generators]).to(like)


class SingleStepInverseObjective(_Objective):
    """Ouroboros' single-step inverse renderer: every pass of every clip from the input noise at
    SIGMA_MAX in one evaluation (``inverse_x0``, as the pipeline runs it), x0 decoded by the frozen VAE
    decoder, and the pixel losses of dr.train.loss.pass_loss over the surface mask (normal angle,
    scale-and-shift invariant depth, squared error), summed over the passes."""

    def __init__(self, pipeline, passes=INVERSE_PASSES, noise_kind: str = "gaussian"):
        super().__init__(pipeline, (edm.P_MEAN, edm.P_STD))
        self.unet, self.pass_embedding, self.passes = pipeline.unet, pipeline.pass_embedding, tuple(passes)
        self.noise_kind = noise_kind

    def forward(self, batch: dict, generators: list[torch.Generator]) -> torch.Tensor:
        video = self.latents(batch, "rgb")
        b = video.shape[0]
        if len(generators) != b:
            raise ValueError(f"{len(generators)} generators for a batch of {b}")
        noise = _clip_noise(self.noise_kind, generators, video.shape[1:], video)
        views = decode_for_loss(self.pipeline.vae, inverse_x0(self.unet, self.pass_embedding, self.passes, video, noise))
        return pass_losses(self.passes, views, batch, b, batch["mask"].to(video.device))


class SingleStepForwardObjective(_Objective):
    """Ouroboros' single-step forward renderer: the rgb latents from the input noise at SIGMA_MAX in one
    evaluation beside the G-buffer latents and env tokens (``forward_x0``, as the pipeline runs it, without
    guidance, so no condition dropout), decoded by the frozen VAE decoder; the squared error against the
    rgb display view over the whole frame (the background is rgb too)."""

    def __init__(self, pipeline, noise_kind: str = "gaussian"):
        super().__init__(pipeline, (edm.P_MEAN, edm.P_STD))
        self.unet, self.env_encoder, self.noise_kind = pipeline.unet, pipeline.env_encoder, noise_kind

    def forward(self, batch: dict, generators: list[torch.Generator]) -> torch.Tensor:
        cond = torch.cat([self.latents(batch, p) for p in FORWARD_CONDITIONS], dim=2)
        b, t = cond.shape[:2]
        if len(generators) != b:
            raise ValueError(f"{len(generators)} generators for a batch of {b}")
        noise = _clip_noise(self.noise_kind, generators, (t, 4, *cond.shape[-2:]), cond)
        x0 = forward_x0(self.unet, self.env_encoder, cond, batch["env"].to(cond.device), noise)
        return rgb_loss(decode_for_loss(self.pipeline.vae, x0), batch)


class CycleObjective(nn.Module):
    """`dr-train cycle` (Ouroboros): a single-step forward and inverse renderer (a RendererPair, one VAE)
    trained together. For a clip with rgb I, G-buffers G and env E:

    - the inverse task, inverse(I) against G, and the forward task, forward(G, E) against I, as the
      single-step objectives take them;
    - the rgb cycle, forward(inverse(I), E) against I: the inverse renderer's x0 pass latents are the
      forward renderer's condition latents (one VAE: no decode and encode between them);
    - the G-buffer cycle, inverse(forward(G, E)) against G: the forward renderer's x0 rgb latents are the
      inverse renderer's video latents.

    The loss is the two task losses + ``cycle_weight`` x the two cycle losses, each in pixel space after
    the frozen decoder. Each clip's generator draws the four input noises in that order."""

    def __init__(self, pair, cycle_weight: float = 1.0):
        super().__init__()
        self.__dict__["pair"] = pair
        pair.vae.requires_grad_(False).eval()
        f, i = pair.forward, pair.inverse
        self.forward_unet, self.env_encoder = f.unet, f.env_encoder
        self.inverse_unet, self.pass_embedding = i.unet, i.pass_embedding
        self.kinds = (f.config.get("input_noise", "gaussian"), i.config.get("input_noise", "gaussian"))
        self.cycle_weight = cycle_weight
        self.passes = INVERSE_PASSES
        self.order = [self.passes.index(p) for p in FORWARD_CONDITIONS]

    @torch.no_grad()
    def latents(self, batch: dict, name: str) -> torch.Tensor:
        vae = self.pair.vae
        return encode_frames(vae, batch[name].to(vae.device, vae.dtype)).float()

    def _as_conditions(self, x0_passes: torch.Tensor, b: int) -> torch.Tensor:
        """Pass-major inverse x0 latents (P*B, T, 4, h, w) -> forward condition latents (B, T, 20, h, w)."""
        return torch.cat([x0_passes[k * b:(k + 1) * b] for k in self.order], dim=2)

    def parts(self, batch: dict, generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
        """{'inverse', 'forward', 'rgb_cycle', 'gbuffer_cycle'}: the four losses of one batch."""
        vae = self.pair.vae
        video = self.latents(batch, "rgb")
        b = video.shape[0]
        if len(generators) != b:
            raise ValueError(f"{len(generators)} generators for a batch of {b}")
        g = torch.cat([self.latents(batch, p) for p in FORWARD_CONDITIONS], dim=2)
        env, mask = batch["env"].to(video.device), batch["mask"].to(video.device)
        fk, ik = self.kinds
        shape = video.shape[1:]
        n_inv, n_fwd = _clip_noise(ik, generators, shape, video), _clip_noise(fk, generators, shape, video)
        n_cyc_fwd, n_cyc_inv = _clip_noise(fk, generators, shape, video), _clip_noise(ik, generators, shape, video)
        x_inv = inverse_x0(self.inverse_unet, self.pass_embedding, self.passes, video, n_inv)
        x_fwd = forward_x0(self.forward_unet, self.env_encoder, g, env, n_fwd)
        x_rgb_cycle = forward_x0(self.forward_unet, self.env_encoder, self._as_conditions(x_inv, b), env, n_cyc_fwd)
        x_g_cycle = inverse_x0(self.inverse_unet, self.pass_embedding, self.passes, x_fwd, n_cyc_inv)
        # one batched decode of the passes, one of the rgb
        views = decode_for_loss(vae, torch.cat([x_inv, x_g_cycle]))
        rgb = decode_for_loss(vae, torch.cat([x_fwd, x_rgb_cycle]))
        p = len(self.passes)
        return {"inverse": pass_losses(self.passes, views[:p * b], batch, b, mask),
                "forward": rgb_loss(rgb[:b], batch),
                "rgb_cycle": rgb_loss(rgb[b:], batch),
                "gbuffer_cycle": pass_losses(self.passes, views[p * b:], batch, b, mask)}

    def forward(self, batch: dict, generators: list[torch.Generator]) -> torch.Tensor:
        parts = self.parts(batch, generators)
        return parts["inverse"] + parts["forward"] + self.cycle_weight * (parts["rgb_cycle"] + parts["gbuffer_cycle"])


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
    if kind == "forward" and cfg.train.single_step:
        return SingleStepForwardObjective(pipeline, noise_kind=cfg.train.input_noise)
    if kind == "forward":
        return ForwardObjective(pipeline, cfg.train.condition_dropout, noise)
    if kind == "inverse" and cfg.train.single_step:
        return SingleStepInverseObjective(pipeline, noise_kind=cfg.train.input_noise)
    if kind == "inverse":
        return InverseObjective(pipeline, noise=noise)
    if kind == "env-encoder":
        return EnvObjective(pipeline)
    if kind == "cycle":
        return CycleObjective(pipeline, cfg.train.cycle_weight)
    raise ValueError(f"no objective for {kind!r}")
