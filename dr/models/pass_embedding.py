"""The inverse renderer's pass embedding: one learned cross-attention token per G-buffer pass."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# The inverse renderer's pass ids (DiffusionRenderer's order); the table has room for 16.
PASS_IDS = {"basecolor": 0, "metallic": 1, "roughness": 2, "normal": 3, "depth": 4}
INVERSE_PASSES = tuple(PASS_IDS)


class PassEmbedding(ModelMixin, ConfigMixin):
    """Pass ids (N,) -> contexts (N, 1, embedding_dim)."""

    @register_to_config
    def __init__(self, num_embeddings: int = 16, embedding_dim: int = 1024):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)[:, None, :]


def pass_ids(passes) -> torch.Tensor:
    """Names -> their ids (long tensor); ValueError for a pass the inverse renderer does not make."""
    unknown = [p for p in passes if p not in PASS_IDS]
    if unknown:
        raise ValueError(f"no pass embedding for {', '.join(unknown)}: choose from {', '.join(PASS_IDS)}")
    return torch.tensor([PASS_IDS[p] for p in passes], dtype=torch.long)
