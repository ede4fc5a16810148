"""DiffusionLight's chrome-ball painter on SDXL (facts from its paper and repositories; the arithmetic
is in dr.models.diffusionlight, the unwrap in dr.labeling.chrome_ball).

A square image (the frame letterboxed with black to ``size``, 1024 for SDXL) gets a chrome ball of
``ball`` px (256) painted at its centre by SDXL base with a depth ControlNet: the mask is the ball's
disc dilated by ``dilate`` px (20), the control image the scene's depth (DPT, inverse depth scaled to
[0, 1] by its maximum) with a white disc where the ball goes; prompt PROMPT, negative NEGATIVE_PROMPT,
UniPC, guidance 5, ControlNet scale 0.5. Exposures: the prompt and pooled embeddings interpolated
toward PROMPT_DARK by t = EV / -5, with the exposure LoRA at 0.75. The mask is taken to the latents
bilinearly (diffusers takes it nearest; DiffusionLight needs the soft edge).

Two modes:
- ``normal``, the iterative median: ``balls`` seeds at strength 1, their per-pixel median pasted
  into the image, ``balls`` seeds at ``strength`` (0.8) from it, their median pasted, one final
  ball at ``strength``; per exposure.
- ``turbo``: one pass per exposure with the Turbo LoRA (scale 1), swapped for the exposure LoRA
  once the timestep falls to ``switch_timestep`` (800); the same seed for every exposure.

A light folder (``--light DIR``) holds the parts, each a local diffusers or transformers folder:

    sdxl/            SDXL base (model_index.json, unet/, vae/, text_encoder/, text_encoder_2/,
                     tokenizer/, tokenizer_2/, scheduler/)
    controlnet/      the depth ControlNet (ControlNetModel)
    vae/             optional: a VAE used in place of sdxl/vae (DiffusionLight uses the fp16-fixed one)
    depth/           DPT (DPTForDepthEstimation and its preprocessor_config.json)
    lora/exposure/   the exposure LoRA (pytorch_lora_weights.safetensors)
    lora/turbo/      optional: the Turbo LoRA, for mode turbo

``--light hub`` takes each from the hub (dr.models.folders.LIGHT_HUB). ``save_tiny_light`` writes a tiny random folder of
the same classes (``dr-train init-tiny``): tokenizers from a character vocabulary the project writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from diffusers import (AutoencoderKL, ControlNetModel, StableDiffusionXLControlNetInpaintPipeline,
                       UNet2DConditionModel, UniPCMultistepScheduler)

from dr.errors import UserError
from dr.models.folders import LIGHT_HUB, check_light
from dr.models.diffusionlight import EVS, NEGATIVE_PROMPT, PROMPT, PROMPT_DARK, interpolate_embeddings, median_ball



@dataclass(frozen=True)
class PaintSettings:
    """How balls are painted (defaults: DiffusionLight's)."""

    size: int = 1024
    ball: int = 256
    dilate: int = 20
    steps: int = 30
    guidance: float = 5.0
    controlnet_scale: float = 0.5
    lora_scale: float = 0.75
    evs: tuple[float, ...] = EVS
    mode: str = "normal"
    balls: int = 30
    strength: float = 0.8
    switch_timestep: int = 800
    seed: int = 200
    batch: int = 4


def disc(size: int) -> np.ndarray:
    """(size, size) bool: the pixels whose centres lie within the inscribed circle."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    return (c[None, :] ** 2 + c[:, None] ** 2) <= 1.0


def ball_box(s: PaintSettings) -> tuple[int, int]:
    """(top-left, bottom-right) pixel bounds of the ball's square in the size x size image."""
    lo = (s.size - s.ball) // 2
    return lo, lo + s.ball


def inpaint_mask(s: PaintSettings) -> np.ndarray:
    """(size, size) float in {0, 1}: the ball's disc dilated by ``dilate`` px (``dilate`` / 2 a side)."""
    m = np.zeros((s.size, s.size), np.float32)
    lo, _ = ball_box(s)
    d = s.ball + s.dilate
    a = lo - s.dilate // 2
    m[a:a + d, a:a + d] = disc(d)
    return m


def paste_ball(image: np.ndarray, ball: np.ndarray, s: PaintSettings) -> np.ndarray:
    """``image`` (size, size, 3) with ``ball`` (ball, ball, 3) put inside its disc at the centre."""
    out = np.array(image, dtype=np.float32, copy=True)
    lo, hi = ball_box(s)
    m = disc(s.ball)[..., None]
    out[lo:hi, lo:hi] = np.where(m, ball, out[lo:hi, lo:hi])
    return out


class _BallInpaintPipeline(StableDiffusionXLControlNetInpaintPipeline):
    """SDXL ControlNet inpainting whose mask reaches the latents bilinearly (a soft ball edge)."""

    def prepare_mask_latents(self, mask, masked_image, batch_size, height, width, *args, **kwargs):
        size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        mask = torch.nn.functional.interpolate(mask, size=size, mode="bilinear", align_corners=False)
        return super().prepare_mask_latents(mask, masked_image, batch_size, height, width, *args, **kwargs)


def _part(light: str, name: str) -> str | None:
    if light == "hub":
        return LIGHT_HUB[name]
    p = Path(light) / name
    return str(p) if p.is_dir() else None


class BallPainter:
    """Paints chrome balls into square images (module docstring). ``from_folder`` loads one."""

    def __init__(self, pipe: _BallInpaintPipeline, depth_model, depth_processor, turbo: bool, source: str):
        self.pipe, self.depth_model, self.depth_processor = pipe, depth_model, depth_processor
        self.has_turbo, self.source = turbo, source
        self._embeds: dict | None = None
        self.calls = 0  # pipeline calls made (images painted), for the figures and the tests

    @classmethod
    def from_folder(cls, light: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                    cache_dir: str | Path | None = None) -> "BallPainter":
        import warnings

        from diffusers.utils import logging as diffusers_logging
        from transformers import AutoImageProcessor, DPTForDepthEstimation
        from transformers.utils import logging as transformers_logging

        # a labelling process's output is the command's: no progress bars, no notes on every painting
        # (diffusers warns at each call that the VAE's dtype is set by a cast)
        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        warnings.filterwarnings("ignore", message=".*`torch_dtype` is deprecated")
        light = check_light(light)
        device = torch.device(device)
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        kw = {"cache_dir": str(Path(cache_dir) / "huggingface")} if cache_dir and light == "hub" else {}
        try:
            controlnet = ControlNetModel.from_pretrained(_part(light, "controlnet"), torch_dtype=dtype, **kw)
            extra = {}
            vae = _part(light, "vae")
            if vae is not None:
                extra["vae"] = AutoencoderKL.from_pretrained(vae, torch_dtype=dtype, **kw)
            pipe = _BallInpaintPipeline.from_pretrained(_part(light, "sdxl"), controlnet=controlnet, torch_dtype=dtype,
                                                        add_watermarker=False, **extra, **kw)
            pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
            pipe.load_lora_weights(_part(light, "lora/exposure"), adapter_name="exposure", **kw)
            turbo = _part(light, "lora/turbo")
            if turbo is not None:
                pipe.load_lora_weights(turbo, adapter_name="turbo", **kw)
            depth_dir = _part(light, "depth")
            depth_model = DPTForDepthEstimation.from_pretrained(depth_dir, torch_dtype=dtype, **kw).eval()
            depth_processor = AutoImageProcessor.from_pretrained(depth_dir, **kw)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot load the DiffusionLight models from {light!r}: {first}") from None
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)
        depth_model.to(device)
        return cls(pipe, depth_model, depth_processor, turbo is not None, light)

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    # -- conditions ------------------------------------------------------------------------------

    def embeddings(self, evs: Sequence[float]) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
        """{EV: (prompt embeddings, pooled)}: PROMPT and PROMPT_DARK encoded once, then interpolated."""
        if self._embeds is None:
            with torch.no_grad():
                pe, _, pooled, _ = self.pipe.encode_prompt(PROMPT, device=self.device, do_classifier_free_guidance=False)
                pd, _, pooled_d, _ = self.pipe.encode_prompt(PROMPT_DARK, device=self.device,
                                                             do_classifier_free_guidance=False)
            self._embeds = {"normal": (pe, pooled), "dark": (pd, pooled_d)}
        (pe, pooled), (pd, pooled_d) = self._embeds["normal"], self._embeds["dark"]
        return interpolate_embeddings(pe, pd, pooled, pooled_d, evs)

    @torch.no_grad()
    def depth(self, image: np.ndarray, s: PaintSettings) -> np.ndarray:
        """The control image (size, size, 3) in [0, 1]: DPT's inverse depth of ``image`` (display
        values in [0, 1]) over its maximum, a white disc where the ball goes."""
        inputs = self.depth_processor(images=(np.clip(image, 0, 1) * 255).round().astype(np.uint8), return_tensors="pt")
        pixel = inputs["pixel_values"].to(self.device, self.depth_model.dtype)
        pred = self.depth_model(pixel_values=pixel).predicted_depth[:, None].float()
        pred = torch.nn.functional.interpolate(pred, size=image.shape[:2], mode="bicubic", align_corners=False)[0, 0]
        d = pred.clamp(min=0).cpu().numpy()
        d = d / max(float(d.max()), 1e-8)
        lo, hi = ball_box(s)
        m = disc(s.ball)
        d[lo:hi, lo:hi] = np.where(m, 1.0, d[lo:hi, lo:hi])
        return np.repeat(d[..., None], 3, axis=-1).astype(np.float32)

    # -- painting --------------------------------------------------------------------------------

    def _adapter(self, name: str, scale: float) -> None:
        self.pipe.set_adapters([name], adapter_weights=[scale])

    def paint(self, image: np.ndarray, control: np.ndarray, ev: float, seeds: Sequence[int], strength: float,
              s: PaintSettings, on_step: Callable | None = None) -> list[np.ndarray]:
        """One ball (ball, ball, 3) in [0, 1] per seed, painted into ``image`` at exposure ``ev``."""
        pe, pooled = self.embeddings([ev])[float(ev)]
        lo, hi = ball_box(s)
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()  # noqa: E731
        out = []
        for i in range(0, len(seeds), s.batch):
            chunk = list(seeds[i:i + s.batch])
            n = len(chunk)
            kwargs = {}
            if on_step is not None:
                kwargs["callback_on_step_end"] = on_step
            images = self.pipe(
                prompt_embeds=pe.repeat(n, 1, 1), pooled_prompt_embeds=pooled.repeat(n, 1),
                negative_prompt=[NEGATIVE_PROMPT] * n, image=to_t(image).repeat(n, 1, 1, 1),
                mask_image=torch.from_numpy(inpaint_mask(s))[None, None].repeat(n, 1, 1, 1),
                control_image=to_t(control).repeat(n, 1, 1, 1), height=s.size, width=s.size,
                strength=strength, num_inference_steps=s.steps, guidance_scale=s.guidance,
                controlnet_conditioning_scale=s.controlnet_scale,
                generator=[torch.Generator("cpu").manual_seed(int(k)) for k in chunk], output_type="np", **kwargs,
            ).images
            self.calls += n
            out += [np.asarray(im[lo:hi, lo:hi, :3], dtype=np.float32) for im in images]
        return out

    def exposures(self, image: np.ndarray, s: PaintSettings) -> dict[float, np.ndarray]:
        """{EV: ball (ball, ball, 3) display values in [0, 1]} for the square ``image`` (size, size, 3)."""
        if image.shape[:2] != (s.size, s.size):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, the painter wants {s.size}x{s.size}")
        control = self.depth(image, s)
        out = {}
        for ev in s.evs:
            if s.mode == "turbo":
                out[float(ev)] = self._turbo(image, control, ev, s)
                continue
            self._adapter("exposure", s.lora_scale)
            seeds = [s.seed + i for i in range(s.balls)]
            med = median_ball(self.paint(image, control, ev, seeds, 1.0, s))
            med = median_ball(self.paint(paste_ball(image, med, s), control, ev, seeds, s.strength, s))
            out[float(ev)] = self.paint(paste_ball(image, med, s), control, ev, [s.seed], s.strength, s)[0]
        return out

    def _turbo(self, image, control, ev, s: PaintSettings) -> np.ndarray:
        if not self.has_turbo:
            raise UserError(f"light.mode turbo needs lora/turbo/ in the light folder {self.source}")
        self._adapter("turbo", 1.0)
        state = {"switched_at": None}

        def switch(pipe, i, t, kwargs):
            # called after step i; the next step's timestep decides whether the exposure LoRA takes over
            ts = pipe.scheduler.timesteps
            nxt = int(ts[i + 1]) if i + 1 < len(ts) else -1
            if state["switched_at"] is None and 0 <= nxt <= s.switch_timestep:
                self._adapter("exposure", s.lora_scale)
                state["switched_at"] = nxt
            return kwargs

        ball = self.paint(image, control, ev, [s.seed], 1.0, s, on_step=switch)[0]
        self.last_switch = state["switched_at"]
        return ball


# ---------------------------------------------------------------------------------------------
# the tiny stand-in

def _char_tokenizer_files(folder: Path) -> None:
    """A CLIP tokenizer that spells every word out, character by character: CLIP's byte alphabet
    (each character alone and word-final), its two special tokens, no merges."""
    # GPT-2's byte alphabet, as CLIP's byte-level BPE uses it: printable bytes stand for themselves,
    # the others (controls, space, ...) are moved to code points from 256 up, in byte order
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def save_tiny_light(out: str | Path, seed: int = 0) -> Path:
    """Write a random DiffusionLight folder of the real classes at the smallest widths (module
    docstring's layout, every part present): the CPU and test stand-in."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from peft import LoraConfig, get_peft_model_state_dict
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer,
                              DPTConfig, DPTForDepthEstimation, DPTImageProcessor)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok_dir = out / ".tokenizer-files"
        _char_tokenizer_files(tok_dir)
        tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
        vocab = len(tokenizer)
        text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    max_position_embeddings=77, projection_dim=32,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
        enc1 = CLIPTextModel(CLIPTextConfig(**text))
        enc2 = CLIPTextModelWithProjection(CLIPTextConfig(**text))
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), cross_attention_dim=64, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
            transformer_layers_per_block=1)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 64, 64),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=1, sample_size=256, scaling_factor=0.13025)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 32, 32))
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=enc1, text_encoder_2=enc2, tokenizer=tokenizer,
                                         tokenizer_2=tokenizer, unet=unet, scheduler=scheduler, add_watermarker=False)
        pipe.save_pretrained(out / "sdxl")
        controlnet.save_pretrained(out / "controlnet")
        for name in ("exposure", "turbo"):
            cfg = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                             init_lora_weights=False)
            unet.add_adapter(cfg, adapter_name=name)
            layers = get_peft_model_state_dict(unet, adapter_name=name)
            StableDiffusionXLPipeline.save_lora_weights(out / "lora" / name, unet_lora_layers=layers)
            unet.delete_adapters(name)
        dpt = DPTForDepthEstimation(DPTConfig(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
            patch_size=8, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, backbone_out_indices=[0, 1, 2, 3],
            reassemble_factors=[4, 2, 1, 0.5], head_in_index=-1))
        dpt.save_pretrained(out / "depth")
        DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False).save_pretrained(out / "depth")
    import shutil

    shutil.rmtree(tok_dir, ignore_errors=True)
    return out
