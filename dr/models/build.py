"""New forward and inverse renderers from an SVD base (DESIGN section 7)."""

from __future__ import annotations

import copy
from typing import Sequence

import torch

from dr.models.base import Base
from dr.models.env_encoder import EnvEncoder
from dr.models.pass_embedding import PassEmbedding
from dr.models.pipelines import ForwardRendererPipeline, InverseRendererPipeline
from dr.models.unet import RendererUNet

LATENT = 4


def new_forward_renderer(base: Base, env_stem_channels: Sequence[int] = (16, 32, 96, 256),
                         seed: int = 0) -> ForwardRendererPipeline:
    """conv_in 4 + 5 x 4 channels, a context per level as wide as that level, no temporal
    cross-attention, and a new env encoder of the UNet's widths."""
    widths = tuple(base.unet.config.block_out_channels)
    unet = RendererUNet.from_base(base.unet, LATENT * 6, cross_attention_dim=widths, temporal_cross_attention=False,
                                  seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        env = EnvEncoder(stem_channels=tuple(env_stem_channels), block_out_channels=widths)
    return _eval(ForwardRendererPipeline(unet=unet, vae=copy.deepcopy(base.vae), env_encoder=env,
                                         scheduler=copy.deepcopy(base.scheduler)))


def new_inverse_renderer(base: Base, seed: int = 0) -> InverseRendererPipeline:
    """conv_in 4 + 4 channels (every base weight kept) and a pass embedding as the context."""
    unet = RendererUNet.from_base(base.unet, LATENT * 2, seed=seed)
    dim = base.unet.config.cross_attention_dim
    if not isinstance(dim, int):
        raise ValueError(f"the base UNet has per-level context widths {dim}; the inverse renderer needs one")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        emb = PassEmbedding(16, dim)
    return _eval(InverseRendererPipeline(unet=unet, vae=copy.deepcopy(base.vae), pass_embedding=emb,
                                         scheduler=copy.deepcopy(base.scheduler)))


def _eval(pipeline):
    """A new pipeline in inference mode, as from_pretrained gives it (the trainer switches what it trains)."""
    for module in pipeline.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return pipeline
