"""The base model: Stable Video Diffusion's UNet, VAE and scheduler, from a local diffusers folder
or a hub id, and the tiny random stand-in of the same classes (``dr-train init-tiny``).

A base folder is read, never written (DESIGN section 6). Hub downloads go to the cache folder the
caller names, not to ~/.cache/huggingface.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel

from dr.errors import UserError

# Stable Video Diffusion's scheduler (EDM with v-prediction, Karras sigmas), as its release ships it.
SVD_SCHEDULER = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "v_prediction", "sigma_max": 700.0, "sigma_min": 0.002,
    "steps_offset": 1, "timestep_spacing": "leading", "timestep_type": "continuous", "trained_betas": None,
    "use_karras_sigmas": True,
}
COMPONENTS = ("unet", "vae", "scheduler")


@dataclass
class Base:
    unet: UNetSpatioTemporalConditionModel
    vae: AutoencoderKLTemporalDecoder
    scheduler: EulerDiscreteScheduler
    source: str


def _is_hub_id(base: str) -> bool:
    parts = base.split("/")
    return len(parts) == 2 and all(parts) and not base.startswith((".", "/", "~")) and not Path(base).exists()


def check_base(base: str) -> str:
    """``base`` as a local folder path or a hub id; UserError (one line) if a local path is not an
    SVD diffusers folder. Loads nothing."""
    if _is_hub_id(base):
        return base
    p = Path(base).expanduser()
    if not p.is_dir():
        raise UserError(f"--base {base!r} is neither a folder nor a hub id (owner/name)")
    missing = [c for c in COMPONENTS if not (p / c / ("scheduler_config.json" if c == "scheduler" else "config.json")).is_file()]
    if missing:
        raise UserError(f"--base {base!r} is not a diffusers folder of Stable Video Diffusion: no "
                        f"{', '.join(m + '/' for m in missing)} (make one with 'dr-train init-tiny --out DIR')")
    classes = {"unet": "UNetSpatioTemporalConditionModel", "vae": "AutoencoderKLTemporalDecoder"}
    for comp, cls in classes.items():
        try:
            got = json.loads((p / comp / "config.json").read_text()).get("_class_name")
        except (OSError, json.JSONDecodeError):
            raise UserError(f"--base {base!r}: {comp}/config.json is not readable JSON") from None
        if got != cls:
            raise UserError(f"--base {base!r}: {comp}/ holds a {got}, not SVD's {cls}")
    return str(p.absolute())


def load_base(base: str, cache_dir: str | Path | None = None) -> Base:
    """UNet, VAE and scheduler of an SVD base (fp32). ``cache_dir`` receives hub downloads."""
    src = check_base(base)
    kw = {} if not _is_hub_id(src) else {"cache_dir": str(Path(cache_dir) / "huggingface") if cache_dir else None}
    try:
        unet = UNetSpatioTemporalConditionModel.from_pretrained(src, subfolder="unet", torch_dtype=torch.float32, **kw)
        vae = AutoencoderKLTemporalDecoder.from_pretrained(src, subfolder="vae", torch_dtype=torch.float32, **kw)
        scheduler = EulerDiscreteScheduler.from_pretrained(src, subfolder="scheduler", **kw)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = " (no such local folder, so it was taken for a hub id)" if _is_hub_id(src) else ""
        raise UserError(f"cannot load the base model {base!r}{where}: {first}") from None
    return Base(unet=unet, vae=vae, scheduler=scheduler, source=src)


def tiny_unet_config() -> dict:
    """SVD's UNet at the smallest widths GroupNorm(32) allows: two levels of 32 and 64 channels. Heads of
    32 channels (one, then two): with SVD's 8 heads the heads would be 4 and 8 wide, and CPU attention
    over such narrow heads took half of a training step (twice the step time of these)."""
    return {
        "in_channels": 8, "out_channels": 4, "block_out_channels": (32, 64),
        "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        "layers_per_block": 2, "cross_attention_dim": 32, "num_attention_heads": (1, 2),
        "addition_time_embed_dim": 32, "projection_class_embeddings_input_dim": 96, "num_frames": 8,
    }


def tiny_vae_config() -> dict:
    """SVD's VAE class at widths (32, 64): one downsampling step, 4 latent channels."""
    return {
        "in_channels": 3, "out_channels": 3, "block_out_channels": (32, 64),
        "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"), "layers_per_block": 1,
        "latent_channels": 4, "sample_size": 64, "scaling_factor": 0.18215,
    }


def tiny_base(seed: int = 0) -> Base:
    """A random tiny SVD of the real classes, the same for the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetSpatioTemporalConditionModel(**tiny_unet_config())
        vae = AutoencoderKLTemporalDecoder(**tiny_vae_config())
    return Base(unet=unet, vae=vae, scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER), source=f"tiny-seed-{seed}")


def save_base(base: Base, out: str | Path) -> Path:
    """Write an SVD diffusers folder (unet/, vae/, scheduler/, model_index.json) at ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base.unet.save_pretrained(out / "unet")
    base.vae.save_pretrained(out / "vae")
    base.scheduler.save_pretrained(out / "scheduler")
    import diffusers

    index = {"_class_name": "StableVideoDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
             "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"],
             "image_encoder": [None, None], "feature_extractor": [None, None]}
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out

