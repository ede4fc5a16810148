"""The renderers' UNet: SVD's spatio-temporal UNet with peft support and per-level contexts.

``RendererUNet`` is diffusers' ``UNetSpatioTemporalConditionModel`` (the same parameter names, so
an SVD checkpoint loads into it) with three additions:

- ``PeftAdapterMixin``, so LoRA adapters attach, switch and save the diffusers/peft way;
- a context per resolution level: ``encoder_hidden_states`` may be a list of one tensor per
  level ((B*T, N_l, C_l), a separate context for every frame), fed down i <- level i, mid <- last,
  up i <- level (L-1-i); ``cross_attention_dim`` is then a tuple of the levels' widths;
- ``temporal_cross_attention=False`` drops the temporal blocks' cross-attention (the forward
  renderer's env tokens are per frame and thousands long; SVD's temporal blocks would copy the
  first frame's context to every pixel). The UNet then has no such parameters at all.

``from_base`` builds the forward or inverse renderer's UNet from an SVD UNet: conv_in widened with
zero weights for the new channels, every other weight of matching name and shape copied, and the
spatial cross-attention re-initialised where the context width changed.
"""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  diffusers' pipeline loader looks it up here
from diffusers.models.transformers.transformer_temporal import (
    TransformerSpatioTemporalModel,
    TransformerTemporalModelOutput,
)
from diffusers.models.unets.unet_spatio_temporal_condition import (
    UNetSpatioTemporalConditionModel,
    UNetSpatioTemporalConditionOutput,
)


class SpatialContextTransformer(TransformerSpatioTemporalModel):
    """A spatio-temporal transformer whose temporal blocks attend only to themselves.

    Same parameters as diffusers' class minus the temporal ``attn2``/``norm2``; the forward skips
    building the temporal context (B*H*W copies of the first frame's tokens)."""

    def forward(self, hidden_states, encoder_hidden_states=None, image_only_indicator=None, return_dict=True):
        batch_frames, _, height, width = hidden_states.shape
        num_frames = image_only_indicator.shape[-1]
        batch_size = batch_frames // num_frames
        residual = hidden_states
        hidden_states = self.norm(hidden_states)
        inner_dim = hidden_states.shape[1]
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch_frames, height * width, inner_dim)
        hidden_states = self.proj_in(hidden_states)
        frame_ids = torch.arange(num_frames, device=hidden_states.device).repeat(batch_size)
        emb = self.time_pos_embed(self.time_proj(frame_ids).to(dtype=hidden_states.dtype))[:, None, :]
        for block, temporal_block in zip(self.transformer_blocks, self.temporal_transformer_blocks):
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, hidden_states, None, encoder_hidden_states, None)
            else:
                hidden_states = block(hidden_states, encoder_hidden_states=encoder_hidden_states)
            mixed = temporal_block(hidden_states + emb, num_frames=num_frames, encoder_hidden_states=None)
            hidden_states = self.time_mixer(x_spatial=hidden_states, x_temporal=mixed,
                                            image_only_indicator=image_only_indicator)
        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_frames, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
        output = hidden_states + residual
        return TransformerTemporalModelOutput(sample=output) if return_dict else (output,)


class RendererUNet(UNetSpatioTemporalConditionModel, PeftAdapterMixin):
    """SVD's UNet with peft, per-level contexts and optional temporal cross-attention (module doc)."""

    @register_to_config
    def __init__(self, sample_size=None, in_channels=8, out_channels=4,
                 down_block_types=("CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal",
                                   "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
                 up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal",
                                 "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
                 block_out_channels=(320, 640, 1280, 1280), addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=768, layers_per_block=2, cross_attention_dim=1024,
                 transformer_layers_per_block=1, num_attention_heads=(5, 10, 20, 20), num_frames=25,
                 temporal_cross_attention: bool = True):
        super().__init__(sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
                         down_block_types=down_block_types, up_block_types=up_block_types,
                         block_out_channels=block_out_channels, addition_time_embed_dim=addition_time_embed_dim,
                         projection_class_embeddings_input_dim=projection_class_embeddings_input_dim,
                         layers_per_block=layers_per_block, cross_attention_dim=cross_attention_dim,
                         transformer_layers_per_block=transformer_layers_per_block,
                         num_attention_heads=num_attention_heads, num_frames=num_frames)
        if not temporal_cross_attention:
            for module in self.modules():
                if isinstance(module, TransformerSpatioTemporalModel):
                    for block in module.temporal_transformer_blocks:
                        block.attn2 = None
                        block.norm2 = None
                    module.__class__ = SpatialContextTransformer

    @property
    def levels(self) -> int:
        return len(self.config.block_out_channels)

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states, added_time_ids: torch.Tensor,
                return_dict: bool = True):
        """sample (B, T, C, H, W); timestep a scalar or (B,) (SVD's c_noise); added_time_ids (B, 3);
        encoder_hidden_states (B, N, C) shared by every frame and level (as SVD), or a list of one
        (B*T, N_l, C_l) context per level."""
        up_factor = 2 ** self.num_upsamplers
        force_upsample = any(s % up_factor != 0 for s in sample.shape[-2:])
        batch_size, num_frames = sample.shape[:2]
        timesteps = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=sample.device)
        timesteps = timesteps.reshape(-1).to(sample.device).expand(batch_size)
        emb = self.time_embedding(self.time_proj(timesteps).to(dtype=sample.dtype))
        time_embeds = self.add_time_proj(added_time_ids.flatten()).reshape(batch_size, -1).to(emb.dtype)
        emb = (emb + self.add_embedding(time_embeds)).repeat_interleave(num_frames, dim=0)
        contexts = self._level_contexts(encoder_hidden_states, num_frames)

        sample = self.conv_in(sample.flatten(0, 1))
        indicator = torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device)
        res_stack = (sample,)
        for i, block in enumerate(self.down_blocks):
            kw = {"encoder_hidden_states": contexts[i]} if getattr(block, "has_cross_attention", False) else {}
            sample, res = block(hidden_states=sample, temb=emb, image_only_indicator=indicator, **kw)
            res_stack += res
        sample = self.mid_block(hidden_states=sample, temb=emb, encoder_hidden_states=contexts[-1],
                                image_only_indicator=indicator)
        for i, block in enumerate(self.up_blocks):
            res = res_stack[-len(block.resnets):]
            res_stack = res_stack[:-len(block.resnets)]
            upsample_size = res_stack[-1].shape[2:] if force_upsample and i < len(self.up_blocks) - 1 else None
            kw = {"encoder_hidden_states": contexts[self.levels - 1 - i]} \
                if getattr(block, "has_cross_attention", False) else {}
            sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size,
                           image_only_indicator=indicator, **kw)
        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        sample = sample.reshape(batch_size, num_frames, *sample.shape[1:])
        return UNetSpatioTemporalConditionOutput(sample=sample) if return_dict else (sample,)

    def _level_contexts(self, ctx, num_frames: int) -> list[torch.Tensor]:
        if torch.is_tensor(ctx):
            return [ctx.repeat_interleave(num_frames, dim=0)] * self.levels
        ctx = list(ctx)
        if len(ctx) != self.levels:
            raise ValueError(f"{len(ctx)} contexts for a UNet of {self.levels} levels")
        return ctx

    @classmethod
    def from_base(cls, base: UNetSpatioTemporalConditionModel, in_channels: int,
                  cross_attention_dim: int | Sequence[int] | None = None, temporal_cross_attention: bool = True,
                  seed: int = 0) -> "RendererUNet":
        """A renderer UNet from an SVD UNet (module doc). ``cross_attention_dim`` None keeps the base's.
        New parameters are drawn from ``seed`` (torch's default inits); the result is in fp32."""
        cfg = {k: v for k, v in base.config.items() if not k.startswith("_")}
        cfg["in_channels"] = in_channels
        if cross_attention_dim is not None:
            cfg["cross_attention_dim"] = tuple(cross_attention_dim) if not isinstance(cross_attention_dim, int) \
                else cross_attention_dim
        cfg["temporal_cross_attention"] = temporal_cross_attention
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = cls(**cfg)
        own = unet.state_dict()
        src = base.state_dict()
        new_context = _dims(cfg["cross_attention_dim"]) != _dims(base.config.cross_attention_dim)
        load = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape and k != "conv_in.weight"
                and not (new_context and ".attn2." in k)}
        w = torch.zeros_like(own["conv_in.weight"])
        n = min(in_channels, src["conv_in.weight"].shape[1])
        # channels both have keep their weights (noisy latent; inverse: the base's conditioning image
        # latent becomes the video latent); the new ones start at zero, so the base's output is kept
        w[:, :n] = src["conv_in.weight"][:, :n].float()
        load["conv_in.weight"] = w
        unet.load_state_dict({k: v.float() for k, v in load.items()}, strict=False)
        return unet


def _dims(d) -> tuple[int, ...] | int:
    return d if isinstance(d, int) else tuple(int(x) for x in d)
