"""Per-pass accuracy measures (torch, on (..., H, W, C) arrays; masks select surface pixels).

- psnr: 10 log10(1 / MSE) for values in [0, 1]
- ssim: Gaussian-window SSIM (11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03) for values in [0, 1]
- angle_deg: mean angle between unit normals, degrees
- rmse: root mean squared error
- absrel_fit: mean |d_fit - d| / d after the least-squares scale and shift that maps the
  prediction to the truth (affine-invariant depth, as relative depth is estimated)
- flicker: mean absolute change between consecutive frames of a (T, H, W, C) video (static scenes:
  what a renderer adds that the scene does not have)
"""

from __future__ import annotations

import math

import torch


def _m(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones(like.shape[:-1], dtype=torch.bool)
    return mask.reshape(like.shape[:-1]).bool()


def psnr(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    m = _m(mask, true)
    mse = float(((pred - true) ** 2)[m].mean()) if m.any() else float("nan")
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def rmse(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    m = _m(mask, true)
    return math.sqrt(float(((pred - true) ** 2)[m].mean()))


def angle_deg(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    m = _m(mask, true)
    p = pred / pred.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    t = true / true.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    cos = (p * t).sum(-1).clamp(-1, 1)
    return float(torch.rad2deg(torch.acos(cos[m])).mean())


def absrel_fit(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    m = _m(mask, true) & (true[..., 0] > 0)
    x, y = pred[..., 0][m].double(), true[..., 0][m].double()
    a = torch.stack([x, torch.ones_like(x)], dim=1)
    sol = torch.linalg.lstsq(a, y[:, None]).solution[:, 0]
    fit = a @ sol
    return float(((fit - y).abs() / y).mean())


def _gauss(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Mean SSIM over frames and channels of (N, H, W, C) images in [0, 1] (valid windows only)."""
    x = pred.permute(0, 3, 1, 2).reshape(-1, 1, *pred.shape[1:3]).double()  # float32 cancels in the variances
    y = true.permute(0, 3, 1, 2).reshape(-1, 1, *true.shape[1:3]).double()
    k = _gauss(min(11, x.shape[-1], x.shape[-2])).double()[None, None]
    f = lambda z: torch.nn.functional.conv2d(z, k)  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def flicker(video: torch.Tensor) -> float:
    """Mean |x[t + 1] - x[t]| over the frames, pixels and channels of ``video`` (T, H, W, C); 0 for one frame."""
    if video.shape[0] < 2:
        return 0.0
    return float((video[1:].double() - video[:-1].double()).abs().mean())
