"""The evaluation measures against answers computed by hand."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from dr.train import image_metrics as im  # noqa: E402


def test_psnr_rmse_of_a_known_error():
    true = torch.zeros(2, 4, 4, 3)
    pred = true + 0.1
    assert im.psnr(pred, true) == pytest.approx(20.0)
    assert im.rmse(pred, true) == pytest.approx(0.1)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True
    pred[1] = 1.0  # off the mask: ignored
    assert im.psnr(pred, true, mask) == pytest.approx(20.0)


def test_angle_between_known_normals():
    true = torch.tensor([[0.0, 0.0, 1.0]]).expand(6, 3)
    a = math.radians(30)
    pred = torch.tensor([[math.sin(a), 0.0, math.cos(a)]]).expand(6, 3) * 3.0  # not unit: normalised first
    assert im.angle_deg(pred, true) == pytest.approx(30.0, abs=1e-4)
    assert im.angle_deg(-true, true) == pytest.approx(180.0, abs=1e-3)


def test_absrel_is_invariant_to_scale_and_shift():
    g = torch.Generator().manual_seed(0)
    depth = 1.0 + 4.0 * torch.rand(3, 8, 8, 1, generator=g)
    assert im.absrel_fit(0.25 * depth - 7.0, depth) == pytest.approx(0.0, abs=1e-6)  # float32 input
    const = torch.full_like(depth, 0.5)
    mean_fit = (depth - depth.mean()).abs() / depth
    assert im.absrel_fit(const, depth) == pytest.approx(float(mean_fit.mean()), rel=1e-6)


def test_ssim_of_itself_and_of_a_shift():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 32, 32, 3, generator=g)
    assert im.ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    # a constant offset c keeps structure and contrast; luminance term (2 mx my + C1) / (mx^2 + my^2 + C1)
    y = (x * 0 + 0.2)
    z = (x * 0 + 0.7)
    c1 = 0.01**2
    assert im.ssim(y, z) == pytest.approx((2 * 0.2 * 0.7 + c1) / (0.2**2 + 0.7**2 + c1), rel=1e-4)
    assert im.ssim(x, torch.rand(2, 32, 32, 3, generator=g)) < 0.2
