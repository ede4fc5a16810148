"""DiffusionLight's arithmetic against hand-computed values: the exposure interpolants and embeddings,
the median of balls, and the HDR merge of a bracket made from a known radiance."""

from __future__ import annotations

import numpy as np
import pytest

from dr.models.diffusionlight import EVS, GAMMA, interpolants, interpolate_embeddings, median_ball, merge_exposures


def test_embeddings_move_toward_the_dark_prompt_by_ev_over_minus_five():
    assert interpolants() == [0.0, 0.5, 1.0]
    assert interpolants((0, -1, -2.5), -5) == [0.0, 0.2, 0.5]
    normal, dark = np.zeros((1, 77, 8)), np.full((1, 77, 8), 2.0)
    pooled_n, pooled_d = np.ones((1, 4)), np.full((1, 4), 3.0)
    got = interpolate_embeddings(normal, dark, pooled_n, pooled_d)
    assert sorted(got) == [-5.0, -2.5, 0.0]
    assert np.all(got[0.0][0] == 0) and np.all(got[0.0][1] == 1)
    assert np.all(got[-2.5][0] == 1.0) and np.all(got[-2.5][1] == 2.0)   # half way
    assert np.all(got[-5.0][0] == 2.0) and np.all(got[-5.0][1] == 3.0)   # the dark prompt itself
    with pytest.raises(ValueError):
        interpolants((0,), 0)


def test_median_ball():
    balls = [np.full((2, 2, 3), v, np.float32) for v in (0.1, 0.9, 0.3)]
    balls[1][0, 0] = -5
    got = median_ball(balls)
    assert np.allclose(got[0, 0], 0.1) and np.allclose(got[0, 1], 0.3) and np.allclose(got[1], 0.3)


def _bracket(radiance: np.ndarray) -> dict[float, np.ndarray]:
    """What a camera records at each EV: the radiance times 2^EV, clipped at 1, gamma-encoded."""
    return {ev: np.clip(radiance * 2.0 ** ev, 0, 1) ** (1 / GAMMA) for ev in EVS}


def test_the_merge_recovers_the_radiance_a_bracket_was_made_from():
    # grey radiances from deep shadow to 30 (the EV -5 image clips at 32): every one comes back
    grey = np.geomspace(0.01, 30.0, 64)[:, None, None] * np.ones((64, 1, 3))
    hdr = merge_exposures(_bracket(grey))
    assert np.allclose(hdr, grey, rtol=1e-5)
    # by hand, one pixel of 4: EV 0 clips (luminance 1, near its clip level 1, the darker estimate 4 is
    # larger: kept), EV -2.5 reads 4 * 2^-2.5 = 0.707 (under 90 % of its level: taken, 4), EV -5 reads 4
    four = np.full((1, 1, 3), 4.0)
    assert merge_exposures(_bracket(four))[0, 0] == pytest.approx([4.0, 4.0, 4.0], rel=1e-6)
    # coloured radiance that EV 0 records unclipped keeps its colour exactly
    colour = np.array([[[0.6, 0.2, 0.05]]])
    assert merge_exposures(_bracket(colour))[0, 0] == pytest.approx(colour[0, 0], rel=1e-5)
    # a colour that clips in two exposures, by hand: EV -5 reads it whole (luminance L); EV -2.5 clips red
    # and green, its luminance l sits in the ramp below its level 2^2.5, so the estimate is w L + (1 - w) l;
    # EV 0 clips to white (luminance 1, at its level): the estimate is kept, in the colour EV 0 saw (white)
    sun = np.array([[[20.0, 10.0, 5.0]]])
    luma = np.array([0.212671, 0.715160, 0.072169])
    big = float(sun[0, 0] @ luma)
    top = 2.0 ** 2.5
    mid = float(np.minimum(sun[0, 0] / top, 1.0) @ luma) * top
    w = min(max((mid - 0.9 * top) / (0.1 * top), 0.0), 1.0)
    assert 0 < w < 1 and mid < big
    got = merge_exposures(_bracket(sun))[0, 0]
    assert got == pytest.approx(np.full(3, w * big + (1 - w) * mid), rel=1e-5)
