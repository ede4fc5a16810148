"""The forward renderer's environment encoder, and the decoder it is pretrained with.

``EnvEncoder`` turns one frame's env encodings (env_ldr, env_log, env_nrm of DESIGN section 2,
stacked to 9 channels, in [-1, 1]) into one feature map per UNet level: a conditioning stem (3x3
convs through ``stem_channels``, a stride-2 step between each pair, so /8 for four widths), then
one ``DownEncoderBlock2D`` per level (no attention, no temporal layers), downsampling between
levels. For SVD's widths (320, 640, 1280, 1280) and a 512 x 512 input the maps are 64, 32, 16 and
8 px. ``tokens`` flattens them into the UNet's per-level cross-attention contexts.

``EnvDecoder`` mirrors it (upsampling blocks back to the input size) for ``dr-train env-encoder``:
an autoencoder with an L2 loss on the encodings, after which the encoder is used frozen.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import DownEncoderBlock2D, UpDecoderBlock2D
from torch import nn

ENV_CHANNELS = 9  # env_ldr, env_log, env_nrm


class EnvEncoder(ModelMixin, ConfigMixin):
    """Env encodings (N, 9, H, W) in [-1, 1] -> one feature map per level (module doc)."""

    @register_to_config
    def __init__(self, in_channels: int = ENV_CHANNELS, stem_channels: tuple[int, ...] = (16, 32, 96, 256),
                 block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280), layers_per_block: int = 2,
                 norm_num_groups: int = 32):
        super().__init__()
        stem: list[nn.Module] = [nn.Conv2d(in_channels, stem_channels[0], 3, padding=1), nn.SiLU()]
        for a, b in zip(stem_channels[:-1], stem_channels[1:]):
            stem += [nn.Conv2d(a, a, 3, padding=1), nn.SiLU(), nn.Conv2d(a, b, 3, padding=1, stride=2), nn.SiLU()]
        stem.append(nn.Conv2d(stem_channels[-1], block_out_channels[0], 3, padding=1))
        self.stem = nn.Sequential(*stem)
        self.blocks = nn.ModuleList()
        prev = block_out_channels[0]
        for i, ch in enumerate(block_out_channels):
            # level 0 keeps the stem's resolution; each later level halves it (its block's input is
            # downsampled by the block before it)
            self.blocks.append(DownEncoderBlock2D(in_channels=prev, out_channels=ch, num_layers=layers_per_block,
                                                  resnet_groups=norm_num_groups,
                                                  add_downsample=i < len(block_out_channels) - 1,
                                                  downsample_padding=0))
            prev = ch

    @property
    def downscale(self) -> int:
        """Input pixels per level-0 feature pixel."""
        return 2 ** (len(self.config.stem_channels) - 1)

    def forward(self, env: torch.Tensor) -> list[torch.Tensor]:
        """env (N, 9, H, W) -> [level 0 (N, C0, H/8, W/8), level 1 (N, C1, H/16, W/16), ...]."""
        x = self.stem(env)
        maps = []
        for block in self.blocks:
            for resnet in block.resnets:
                x = resnet(x, temb=None)
            maps.append(x)
            for down in block.downsamplers or []:
                x = down(x)
        return maps

    def tokens(self, env: torch.Tensor) -> list[torch.Tensor]:
        """env (N, 9, H, W) -> per-level contexts (N, h_l * w_l, C_l) for the UNet's cross-attention."""
        return [m.flatten(2).transpose(1, 2) for m in self(env)]


class EnvDecoder(ModelMixin, ConfigMixin):
    """The last level's map of an ``EnvEncoder`` of the same widths -> the env encodings it came from."""

    @register_to_config
    def __init__(self, out_channels: int = ENV_CHANNELS, stem_channels: tuple[int, ...] = (16, 32, 96, 256),
                 block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280), layers_per_block: int = 2,
                 norm_num_groups: int = 32):
        super().__init__()
        widths = list(reversed(block_out_channels))
        self.blocks = nn.ModuleList()
        prev = widths[0]
        for i, ch in enumerate(widths):
            self.blocks.append(UpDecoderBlock2D(in_channels=prev, out_channels=ch, num_layers=layers_per_block,
                                                resnet_groups=norm_num_groups, add_upsample=i < len(widths) - 1))
            prev = ch
        head: list[nn.Module] = [nn.Conv2d(prev, stem_channels[-1], 3, padding=1), nn.SiLU()]
        rev = list(reversed(stem_channels))
        for a, b in zip(rev[:-1], rev[1:]):
            head += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1), nn.SiLU()]
        head.append(nn.Conv2d(rev[-1], out_channels, 3, padding=1))
        self.head = nn.Sequential(*head)

    def forward(self, last_map: torch.Tensor) -> torch.Tensor:
        x = last_map
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class EnvAutoencoder:
    """An ``EnvEncoder`` and its ``EnvDecoder``, saved side by side (``env_encoder/``, ``env_decoder/``) as
    the checkpoints of ``dr-train env-encoder``; the forward renderer loads ``env_encoder/``."""

    def __init__(self, env_encoder: EnvEncoder, env_decoder: EnvDecoder):
        self.env_encoder, self.env_decoder = env_encoder, env_decoder

    @classmethod
    def new(cls, block_out_channels, stem_channels, seed: int = 0) -> "EnvAutoencoder":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)  # the encoder new_forward_renderer would draw
            enc = EnvEncoder(stem_channels=tuple(stem_channels), block_out_channels=tuple(block_out_channels))
            dec = EnvDecoder(stem_channels=tuple(stem_channels), block_out_channels=tuple(block_out_channels))
        return cls(enc, dec)

    def to(self, device) -> "EnvAutoencoder":
        self.env_encoder.to(device)
        self.env_decoder.to(device)
        return self

    def save_pretrained(self, path) -> None:
        import json
        from pathlib import Path

        path = Path(path)
        self.env_encoder.save_pretrained(path / "env_encoder")
        self.env_decoder.save_pretrained(path / "env_decoder")
        (path / "model_index.json").write_text(json.dumps(
            {"_class_name": "EnvAutoencoder", "env_encoder": ["dr.models.env_encoder", "EnvEncoder"],
             "env_decoder": ["dr.models.env_encoder", "EnvDecoder"]}, indent=1) + "\n")
