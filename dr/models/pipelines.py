"""Inference pipelines of the forward and inverse renderers, in diffusers' layout.

Both work on the training-time views of DESIGN section 2 (each pass as a (T, 3, H, W) image in
[-1, 1]; env encodings stacked to (T, 9, He, We) in [-1, 1]) and sample with SVD's EDM Euler
scheduler. ``save_pretrained`` writes unet/, vae/, scheduler/ (and env_encoder/ or
pass_embedding/) with ``model_index.json``; ``from_pretrained`` rebuilds the pipeline from them.

- ``ForwardRendererPipeline``: G-buffers + env -> the rgb display view (exposure-normalised sRGB
  in [0, 1]; ``display_to_linear`` gives linear radiance up to that exposure). Classifier-free
  guidance against zero conditions and zero env tokens.
- ``InverseRendererPipeline``: rgb display view -> basecolor, metallic, roughness, normal, depth in
  DESIGN's units (depth relative: [0, 1], near small). The passes run as one batch.

Both run clips longer than ``num_frames`` in overlapping windows (``run_windows``) whose x0 latents
are blended linearly; with ``carry`` (Ouroboros' gamma, 0.1 in the paper) a window starts, on the
frames it shares with the one before, from gamma * that window's x0 + (1 - gamma) * noise, which ties
the windows together. A single-step renderer (``single_step=True`` in its model_index.json; Ouroboros)
evaluates the UNet once per window, at SIGMA_MAX, on the input noise its ``input_noise`` names
(gaussian, pyramid or zero), without guidance, and returns that x0: what `dr-train forward|inverse
--single-step` trains. ``RendererPair`` holds the two that `dr-train cycle` trains together.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from diffusers import AutoencoderKLTemporalDecoder, DiffusionPipeline, EulerDiscreteScheduler

from dr.models import edm
from dr.models.env_encoder import EnvEncoder
from dr.models.noise import KINDS as NOISE_KINDS, input_noise
from dr.models.pass_embedding import INVERSE_PASSES, PassEmbedding, pass_ids
from dr.models.unet import RendererUNet

FORWARD_CONDITIONS = ("basecolor", "normal", "depth", "roughness", "metallic")
# SVD's micro-conditioning (fps - 1, motion bucket, noise augmentation), held fixed for renderers
ADDED_TIME_IDS = (6.0, 127.0, 0.0)


def encode_frames(vae: AutoencoderKLTemporalDecoder, frames: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """(B, T, 3, H, W) in [-1, 1] -> scaled latents (B, T, 4, h, w): the posterior's mode, in chunks."""
    b, t = frames.shape[:2]
    flat = frames.flatten(0, 1).to(vae.dtype)
    z = torch.cat([vae.encode(flat[i:i + chunk]).latent_dist.mode() for i in range(0, flat.shape[0], chunk)])
    return (z * vae.config.scaling_factor).reshape(b, t, *z.shape[1:])


def decode_latents(vae: AutoencoderKLTemporalDecoder, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Scaled latents (B, T, 4, h, w) -> frames (B, T, 3, H, W), about [-1, 1]; ``chunk`` frames at
    a time (the temporal decoder sees each chunk as one video)."""
    b, t = latents.shape[:2]
    out = []
    for clip in latents:
        z = clip.to(vae.dtype) / vae.config.scaling_factor
        out.append(torch.cat([vae.decode(z[i:i + chunk], num_frames=z[i:i + chunk].shape[0]).sample
                              for i in range(0, t, chunk)]))
    return torch.stack(out)


def added_time_ids(batch: int, device, dtype) -> torch.Tensor:
    return torch.tensor([ADDED_TIME_IDS] * batch, device=device, dtype=dtype)


def window_starts(frames: int, window: int, overlap: int) -> list[int]:
    """Starts of windows of ``window`` frames covering ``frames``, consecutive ones sharing at least
    ``overlap`` frames; the last window ends at the last frame. One window if the clip fits."""
    if frames <= window:
        return [0]
    if not 0 <= overlap < window:
        raise ValueError(f"overlap {overlap} must be in [0, {window})")
    stride = window - overlap
    starts = list(range(0, frames - window, stride)) + [frames - window]
    return starts


def blend_weights(starts: Sequence[int], window: int, frames: int) -> torch.Tensor:
    """(len(starts), frames) weights: each window's frames weighted by a ramp over the part it
    shares with a neighbour, summing to 1 at every frame."""
    w = torch.zeros(len(starts), frames, dtype=torch.float64)
    for k, s in enumerate(starts):
        ramp = torch.ones(window, dtype=torch.float64)
        if k > 0:
            shared = starts[k - 1] + window - s
            ramp[:shared] = torch.minimum(ramp[:shared], (torch.arange(shared) + 1.0) / (shared + 1.0))
        if k < len(starts) - 1:
            shared = s + window - starts[k + 1]
            ramp[window - shared:] = torch.minimum(ramp[window - shared:],
                                                   (shared - torch.arange(shared, dtype=torch.float64)) / (shared + 1.0))
        w[k, s:s + window] = ramp
    return w / w.sum(0, keepdim=True)


def run_windows(noise: torch.Tensor, window: int, overlap: int, denoise, carry: float = 0.0) -> torch.Tensor:
    """The x0 latents (N, T, C, h, w) of a clip run in overlapping windows and blended.

    ``noise`` (N, T, C, h, w): the unit-scale starting latents of every frame; ``denoise(frames, start)``
    takes a frame slice and that window's starting latents (N, len, C, h, w) and returns its x0 latents.
    Windows as ``window_starts``, weights as ``blend_weights``. With ``carry`` = gamma > 0, window k > 0
    starts on the frames it shares with window k - 1 from gamma * x0_{k-1} + (1 - gamma) * noise."""
    if not 0.0 <= carry <= 1.0:
        raise ValueError(f"carry {carry} must be in [0, 1]")
    t = noise.shape[1]
    starts = window_starts(t, window, overlap)
    span = min(window, t)
    weights = blend_weights(starts, span, t).to(noise.device, torch.float32)
    blended = torch.zeros(noise.shape, device=noise.device, dtype=torch.float32)
    prev = None
    for k, s in enumerate(starts):
        start = noise[:, s:s + span]
        if carry > 0 and prev is not None:
            p_start, p_x0 = prev
            shared = p_start + span - s
            start = start.clone()
            start[:, :shared] = carry * p_x0[:, s - p_start:].to(start.dtype) + (1 - carry) * start[:, :shared]
        z = denoise(slice(s, s + span), start).float()
        blended[:, s:s + span] += z * weights[k, s:s + span].reshape(1, -1, 1, 1, 1)
        prev = (s, z)
    return blended


def display_to_linear(display: np.ndarray) -> np.ndarray:
    """The rgb display view ([0, 1] sRGB) back to linear radiance, up to the clip's exposure scale."""
    from dr.srgb import srgb_to_linear

    return srgb_to_linear(np.clip(display, 0.0, 1.0)).astype(np.float32)


def _check_noise(kind: str) -> None:
    if kind not in NOISE_KINDS:
        raise ValueError(f"input noise {kind!r}: one of {', '.join(NOISE_KINDS)}")


def single_step_x0(unet, noise: torch.Tensor, cond: torch.Tensor, context) -> torch.Tensor:
    """A single-step renderer's x0 latents (N, T, 4, h, w): one evaluation at SIGMA_MAX of the input
    noise (unit scale) beside the condition latents, through SVD's EDM preconditioning. Differentiable
    (the training objective uses it as the pipeline does)."""
    n = noise.shape[0]
    sigma = torch.full((n,), edm.SIGMA_MAX, device=noise.device, dtype=torch.float32)
    noisy = noise * edm.SIGMA_MAX
    s = sigma.reshape(n, 1, 1, 1, 1).to(noise.dtype)
    model_in = torch.cat([edm.c_in(s) * noisy, cond.to(noise.dtype)], dim=2)
    out = unet(model_in, edm.c_noise(sigma).to(noise.dtype), context, added_time_ids(n, noise.device, noise.dtype))
    return edm.denoise(out.sample.float(), noisy.float(), sigma)


class _RendererPipeline(DiffusionPipeline):
    @property
    def default_steps(self) -> int:
        """Sampling steps when the caller gives none: 1 for a single-step renderer, else 20."""
        return 1 if self.config.get("single_step", False) else 20

    def steps(self, num_inference_steps: int | None) -> int:
        if num_inference_steps is None:
            return self.default_steps
        if self.config.get("single_step", False) and num_inference_steps != 1:
            raise ValueError(f"a single-step renderer runs 1 step, not {num_inference_steps}")
        return int(num_inference_steps)

    def guidance(self, guidance_scale: float | None, default: float) -> float:
        """The guidance scale to run: ``default`` when none is given, 1 (none) for a single-step renderer."""
        single = self.config.get("single_step", False)
        if guidance_scale is None:
            return 1.0 if single else float(default)
        if single and guidance_scale != 1.0:
            raise ValueError(f"a single-step renderer runs without guidance, not at {guidance_scale}")
        return float(guidance_scale)

    @property
    def num_frames(self) -> int:
        return int(self.unet.config.num_frames)

    def _sigma_loop(self, num_inference_steps: int, device):
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        return self.scheduler.timesteps

    def _noise(self, shape, generator, device, dtype) -> torch.Tensor:
        gen_device = generator.device if isinstance(generator, torch.Generator) else "cpu"
        return torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32).to(device, dtype)

    def _input_noise(self, shape, generator, device, dtype) -> torch.Tensor:
        """The starting latents of ``shape`` (B, T, C, h, w) as the config's input noise says (gaussian:
        as ``_noise``, from the generator's device; pyramid and zero on the CPU, one clip after another)."""
        kind = self.config.get("input_noise", "gaussian")
        if kind == "gaussian":
            return self._noise(shape, generator, device, dtype)
        return torch.stack([input_noise(kind, shape[1:], generator) for _ in range(shape[0])]).to(device, dtype)


class ForwardRendererPipeline(_RendererPipeline):
    """G-buffers + env -> rgb (module doc)."""

    model_cpu_offload_seq = "env_encoder->unet->vae"

    def __init__(self, unet: RendererUNet, vae: AutoencoderKLTemporalDecoder, env_encoder: EnvEncoder,
                 scheduler: EulerDiscreteScheduler, single_step: bool = False, input_noise: str = "gaussian"):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, env_encoder=env_encoder, scheduler=scheduler)
        _check_noise(input_noise)
        self.register_to_config(single_step=bool(single_step), input_noise=str(input_noise))

    def condition_latents(self, gbuffers: dict[str, torch.Tensor]) -> torch.Tensor:
        """{pass: (B, T, 3, H, W)} -> (B, T, 20, h, w), passes in FORWARD_CONDITIONS order."""
        missing = [p for p in FORWARD_CONDITIONS if p not in gbuffers]
        if missing:
            raise ValueError(f"the forward renderer needs {', '.join(missing)}")
        return torch.cat([encode_frames(self.vae, gbuffers[p]) for p in FORWARD_CONDITIONS], dim=2)

    def env_tokens(self, env: torch.Tensor) -> list[torch.Tensor]:
        """(B, T, 9, He, We) -> per-level contexts (B*T, N_l, C_l)."""
        return self.env_encoder.tokens(env.flatten(0, 1).to(self.env_encoder.dtype))

    @torch.no_grad()
    def __call__(self, gbuffers: dict[str, torch.Tensor] | None, env: torch.Tensor,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
                 window: int | None = None, overlap: int = 6, carry: float = 0.0, decode_chunk_size: int = 8,
                 output_type: str = "np", gbuffer_latents: torch.Tensor | None = None):
        """Returns the rgb display view, (B, T, H, W, 3) float32 in [0, 1] (``output_type='np'``), or
        the scaled latents (``'latent'``). ``num_inference_steps`` defaults to ``default_steps`` and
        ``guidance_scale`` to 1.2 (a single-step renderer: 1 step, no guidance); ``latents`` (B, T, 4, h, w)
        replace the starting noise (unit scale); ``window`` (default the UNet's ``num_frames``),
        ``overlap`` and ``carry`` as ``run_windows``. ``gbuffer_latents`` (B, T, 20, h, w), the scaled
        latents of the passes in FORWARD_CONDITIONS order (an inverse renderer's ``'latent'`` output,
        say), replace ``gbuffers``."""
        num_inference_steps = self.steps(num_inference_steps)
        guidance_scale = self.guidance(guidance_scale, 1.2)
        device, dtype = self._execution_device, self.unet.dtype
        if gbuffer_latents is not None:
            cond = gbuffer_latents.to(device, dtype)
        else:
            cond = self.condition_latents({k: v.to(device) for k, v in gbuffers.items()}).to(dtype)
        b, t = cond.shape[:2]
        tokens = [x.to(dtype).unflatten(0, (b, t)) for x in self.env_tokens(env.to(device))]  # (B, T, N, C)
        shape = (b, t, 4, *cond.shape[-2:])
        x = self._input_noise(shape, generator, device, dtype) if latents is None else latents.to(device, dtype)

        def denoise(frames: slice, start: torch.Tensor) -> torch.Tensor:
            c = cond[:, frames]
            ctx = [tok[:, frames].flatten(0, 1) for tok in tokens]
            if self.config.get("single_step", False):
                return single_step_x0(self.unet, start, c, ctx)
            return self._sample(start, c, ctx, num_inference_steps, guidance_scale, device, dtype)

        x = run_windows(x, window or self.num_frames, overlap, denoise, carry)
        if output_type == "latent":
            return x
        frames = decode_latents(self.vae, x, decode_chunk_size)
        return ((frames.float().clamp(-1, 1) + 1) / 2).permute(0, 1, 3, 4, 2).cpu().numpy()

    def _sample(self, start, cond, ctx, steps: int, guidance_scale: float, device, dtype) -> torch.Tensor:
        """EDM Euler from ``start`` (unit scale) with classifier-free guidance against zero conditions and
        zero env tokens: the x0 latents of one window."""
        cfg = guidance_scale != 1.0
        if cfg:
            cond = torch.cat([torch.zeros_like(cond), cond])
            ctx = [torch.cat([torch.zeros_like(c), c]) for c in ctx]
        timesteps = self._sigma_loop(steps, device)  # before init_noise_sigma, which depends on it
        x = start * self.scheduler.init_noise_sigma
        time_ids = added_time_ids(cond.shape[0], device, dtype)
        for ts in self.progress_bar(timesteps):
            x_in = torch.cat([x, x]) if cfg else x
            x_in = self.scheduler.scale_model_input(x_in, ts)
            out = self.unet(torch.cat([x_in, cond], dim=2), ts, ctx, time_ids).sample
            if cfg:
                uncond, c = out.chunk(2)
                out = uncond + guidance_scale * (c - uncond)
            x = self.scheduler.step(out, ts, x).prev_sample
        return x


class InverseRendererPipeline(_RendererPipeline):
    """rgb -> G-buffers (module doc)."""

    model_cpu_offload_seq = "unet->vae"

    def __init__(self, unet: RendererUNet, vae: AutoencoderKLTemporalDecoder, pass_embedding: PassEmbedding,
                 scheduler: EulerDiscreteScheduler, single_step: bool = False, input_noise: str = "gaussian"):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, pass_embedding=pass_embedding, scheduler=scheduler)
        _check_noise(input_noise)
        self.register_to_config(single_step=bool(single_step), input_noise=str(input_noise))

    @torch.no_grad()
    def __call__(self, video: torch.Tensor | None, passes: Sequence[str] = INVERSE_PASSES,
                 num_inference_steps: int | None = None, generator: torch.Generator | None = None,
                 window: int | None = None, overlap: int = 6, carry: float = 0.0, decode_chunk_size: int = 8,
                 output_type: str = "np", video_latents: torch.Tensor | None = None):
        """video (B, T, 3, H, W): the rgb display view in [-1, 1]. Returns {pass: (B, T, H, W, C)}
        float32 in DESIGN's units (``output_type='np'``), or {pass: scaled latents} (``'latent'``).
        ``num_inference_steps`` defaults to ``default_steps`` (a single-step renderer takes only 1);
        ``window`` (default the UNet's ``num_frames``), ``overlap`` and ``carry`` as ``run_windows``.
        Every pass starts from the same noise. ``video_latents`` (B, T, 4, h, w), scaled (a forward
        renderer's ``'latent'`` output, say), replace ``video``."""
        num_inference_steps = self.steps(num_inference_steps)
        device, dtype = self._execution_device, self.unet.dtype
        passes = tuple(passes)
        p = len(passes)
        ids = pass_ids(passes).to(device)
        if video_latents is not None:
            video_latents = video_latents.to(device, dtype)
        else:
            video_latents = encode_frames(self.vae, video.to(device)).to(dtype)
        b, t = video_latents.shape[:2]
        shape = (b, t, 4, *video_latents.shape[-2:])
        noise = self._input_noise(shape, generator, device, dtype).repeat(p, 1, 1, 1, 1)  # (P*B, ...), pass-major
        context = self.pass_embedding(ids).to(dtype).repeat_interleave(b, dim=0)       # (P*B, 1, D)

        def denoise(frames: slice, start: torch.Tensor) -> torch.Tensor:
            cond = video_latents[:, frames].repeat(p, 1, 1, 1, 1)
            if self.config.single_step:
                return single_step_x0(self.unet, start, cond, context)
            return self._sample(start, cond, context, num_inference_steps, device, dtype)

        blended = run_windows(noise, window or self.num_frames, overlap, denoise, carry).unflatten(0, (p, b))
        if output_type == "latent":
            return dict(zip(passes, blended))
        return {name: to_pass_units(name, decode_latents(self.vae, blended[i], decode_chunk_size))
                for i, name in enumerate(passes)}

    def _sample(self, start, cond, ctx, steps: int, device, dtype) -> torch.Tensor:
        """EDM Euler from ``start`` (unit scale): the x0 latents of every pass of every clip of one window,
        as one batch (pass-major rows)."""
        timesteps = self._sigma_loop(steps, device)  # before init_noise_sigma, which depends on it
        x = start * self.scheduler.init_noise_sigma
        time_ids = added_time_ids(start.shape[0], device, dtype)
        for ts in self.progress_bar(timesteps):
            x_in = self.scheduler.scale_model_input(x, ts)
            out = self.unet(torch.cat([x_in, cond], dim=2), ts, ctx, time_ids).sample
            x = self.scheduler.step(out, ts, x).prev_sample
        return x


def to_pass_units(name: str, view: torch.Tensor) -> np.ndarray:
    """A decoded view (B, T, 3, H, W) in about [-1, 1] -> the pass in DESIGN's units, (B, T, H, W, C)."""
    x = view.float().permute(0, 1, 3, 4, 2)
    if name == "normal":
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    else:
        x = ((x.clamp(-1, 1) + 1) / 2)
        if name in ("roughness", "metallic", "depth"):
            x = x.mean(dim=-1, keepdim=True)
    return x.cpu().numpy().astype(np.float32)


def load_renderer(kind: str, folder) -> "_RendererPipeline":
    """The forward or inverse renderer saved in ``folder``, loaded quietly (no progress bars: a command's
    output stays its own) in inference mode."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    cls = {"forward": ForwardRendererPipeline, "inverse": InverseRendererPipeline}[kind]
    pipe = cls.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


class RendererPair:
    """A forward and an inverse renderer trained together (`dr-train cycle`): saved as ``forward/`` and
    ``inverse/`` (each a pipeline folder of its own, which every command takes as a checkpoint) beside a
    ``model_index.json`` naming this class. Both must share one VAE: the cycle hands latents from one to
    the other."""

    def __init__(self, forward: ForwardRendererPipeline, inverse: InverseRendererPipeline):
        self.forward, self.inverse = forward, inverse

    @property
    def vae(self) -> AutoencoderKLTemporalDecoder:
        return self.forward.vae

    @property
    def unets(self) -> list[RendererUNet]:
        return [self.forward.unet, self.inverse.unet]

    def to(self, device) -> "RendererPair":
        self.forward.to(device)
        self.inverse.to(device)
        return self

    def save_pretrained(self, path) -> None:
        import json
        from pathlib import Path

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.forward.save_pretrained(path / "forward")
        self.inverse.save_pretrained(path / "inverse")
        (path / "model_index.json").write_text(json.dumps(
            {"_class_name": "RendererPair", "forward": "forward", "inverse": "inverse"}, indent=1) + "\n")

    @classmethod
    def from_pretrained(cls, path) -> "RendererPair":
        from pathlib import Path

        path = Path(path)
        return cls(load_renderer("forward", path / "forward"), load_renderer("inverse", path / "inverse"))
