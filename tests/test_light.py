"""DiffusionLight's painter on SDXL (dr.models.light, on the tiny random models of the real classes that
`dr-train init-tiny` writes) and the lighting estimate around it (dr.labeling.light).

The tiny models paint noise, so what is checked is what DiffusionLight's recipe says and can be
computed a second way: how many paintings each mode makes and with which seeds and strengths, the
conditions the UNet receives (the interpolated prompt embeddings, the LoRA in use at each timestep
and its scale), the soft mask, the depth control with its white disc, and that the estimate is the
painted bracket merged and unwrapped. The estimate's geometry is checked with a painter that paints
the ideal mirror ball of a known environment: the letterboxed frame's camera must bring it back."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dr.models.light import (BallPainter, PaintSettings, ball_box, disc, inpaint_mask,  # noqa: E402
                             save_tiny_light)

TINY = PaintSettings(size=128, ball=32, dilate=4, steps=3, balls=2, batch=2)


@pytest.fixture(scope="module")
def painter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("light") / "diffusionlight"
    save_tiny_light(folder, seed=0)
    return BallPainter.from_folder(str(folder))


def _image(seed=0, size=128):
    return np.random.default_rng(seed).random((size, size, 3)).astype(np.float32)


def _unet_calls(painter):
    """Record, per UNet call: the timestep, the text conditions and the LoRA scale on one attention layer."""
    calls = []
    layer = next(m for n, m in painter.pipe.unet.named_modules() if n.endswith("attn1.to_q"))

    def hook(module, args, kwargs):
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        ctx = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        calls.append({"t": float(torch.as_tensor(t).flatten()[0]), "ctx": ctx.detach().clone(),
                      "adapters": list(layer.active_adapters), "scale": dict(layer.scaling)})

    return calls, painter.pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)


def test_normal_mode_paints_the_iterative_median_with_the_exposure_lora(painter):
    calls, h = _unet_calls(painter)
    try:
        before = painter.calls
        balls = painter.exposures(_image(), TINY)
    finally:
        h.remove()
    # per exposure: 2 seeds at strength 1, 2 at 0.8 from their median, one final ball; 3 exposures
    assert painter.calls - before == 3 * (2 + 2 + 1)
    assert sorted(balls) == [-5.0, -2.5, 0.0] and all(b.shape == (32, 32, 3) for b in balls.values())
    assert all(0.0 <= b.min() and b.max() <= 1.0 for b in balls.values())
    # strength 1 runs all 3 steps; 0.8 of 3 steps runs 2: per exposure 2 batched calls of 3 steps, then 1 of 2, then 1 of 2
    assert len(calls) == 3 * (3 + 2 + 2)
    assert all(c["adapters"] == ["exposure"] for c in calls)
    assert all(abs(c["scale"]["exposure"] - 0.75 * 4 / 4) < 1e-9 for c in calls)  # lora_alpha 4, rank 4
    # the conditions: at EV -2.5 the prompt embeddings are halfway between the plain and the dark prompt
    enc = painter.embeddings([0.0, -5.0])
    plain, dark = enc[0.0][0], enc[-5.0][0]
    mid = calls[7]["ctx"]  # the first call of the second exposure; rows: negative, then the prompt (CFG)
    assert torch.allclose(mid[-1], 0.5 * (plain[0] + dark[0]), atol=1e-5)
    assert not torch.allclose(plain, dark)
    # the same seeds paint the same balls
    again = painter.exposures(_image(), TINY)
    assert all(np.array_equal(balls[k], again[k]) for k in balls)
    other = painter.exposures(_image(), PaintSettings(**{**TINY.__dict__, "seed": 7}))
    assert not np.array_equal(balls[0.0], other[0.0])


def test_turbo_swaps_the_turbo_lora_for_the_exposure_lora_at_timestep_800(painter):
    s = PaintSettings(**{**TINY.__dict__, "mode": "turbo", "steps": 8})
    calls, h = _unet_calls(painter)
    try:
        before = painter.calls
        balls = painter.exposures(_image(1), s)
    finally:
        h.remove()
    assert painter.calls - before == 3 and len(calls) == 3 * 8  # one painting per exposure, all 8 steps
    first = calls[:8]
    assert any(c["t"] > 800 for c in first) and any(c["t"] <= 800 for c in first)
    for c in first:
        want = ["turbo"] if c["t"] > 800 else ["exposure"]
        assert c["adapters"] == want, (c["t"], c["adapters"])
        scale = c["scale"][want[0]]
        assert abs(scale - (1.0 if want == ["turbo"] else 0.75)) < 1e-9
    assert all(b.shape == (32, 32, 3) for b in balls.values())


def test_the_lora_in_use_is_the_saved_one_at_its_scale(painter, tmp_path):
    """One attention projection with the exposure LoRA at 0.75: W x + 0.75 B A x, from the saved file."""
    from safetensors.torch import load_file

    painter._adapter("exposure", 0.75)
    name, layer = next((n, m) for n, m in painter.pipe.unet.named_modules() if n.endswith("attn1.to_q"))
    saved = load_file(str(painter.source + "/lora/exposure/pytorch_lora_weights.safetensors"))
    A = next(v for k, v in saved.items() if k.startswith(f"unet.{name}.lora_A"))
    B = next(v for k, v in saved.items() if k.startswith(f"unet.{name}.lora_B"))
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(0))
    want = x @ layer.base_layer.weight.T + 0.75 * (x @ A.T @ B.T)
    if layer.base_layer.bias is not None:
        want = want + layer.base_layer.bias
    with torch.no_grad():
        assert torch.allclose(layer(x), want, atol=1e-5)


def test_the_mask_reaches_the_latents_bilinearly_and_the_control_has_a_white_disc(painter):
    import cv2

    f = painter.pipe.vae_scale_factor
    # a mask whose edge lies between the two pixels a bilinear 8x reduction reads for latent column 5
    half = np.zeros((128, 128), np.float32)
    half[:, 5 * f + f // 2:] = 1.0
    for mask in (half, inpaint_mask(TINY)):
        lat, _ = painter.pipe.prepare_mask_latents(torch.from_numpy(mask)[None, None], None, 1, 128, 128,
                                                   torch.float32, "cpu", None, False)
        want = cv2.resize(mask, (128 // f, 128 // f), interpolation=cv2.INTER_LINEAR)  # a second bilinear
        assert np.abs(lat[0, 0].numpy() - want).max() < 1e-5
        if mask is half:
            nearest = torch.nn.functional.interpolate(torch.from_numpy(mask)[None, None], size=(16, 16))
            assert float(lat[0, 0, 0, 5]) == 0.5 and float(nearest[0, 0, 0, 5]) == 0.0  # diffusers' own: nearest
    # the inpainting mask: the ball's disc grown by 4 px (2 a side)
    lo, hi = ball_box(TINY)
    assert inpaint_mask(TINY)[lo - 2:hi + 2, lo - 2:hi + 2].sum() == disc(36).sum() and inpaint_mask(TINY).sum() == disc(36).sum()
    control = painter.depth(_image(2), TINY)
    assert control.shape == (128, 128, 3) and control.max() <= 1.0 + 1e-6 and control.min() >= 0.0
    assert (control[lo:hi, lo:hi][disc(32)] == 1.0).all()
    outside = np.ones((128, 128), bool)
    outside[lo:hi, lo:hi] &= ~disc(32)
    assert control[outside].std() > 0, "DPT's depth around the ball"


class MirrorPainter:
    """Paints the ideal mirror ball of a known environment into the square, as a perfect DiffusionLight would:
    each ball pixel shows the env in the direction its camera ray reflects to, at each exposure (display
    values: (x 2^EV) ^ (1 / 2.4), clipped). The camera is the letterboxed frame's (set by the test)."""

    def __init__(self, env, K_square):
        self.env, self.K, self.calls = env, K_square, 0

    def exposures(self, square, s):
        from dr.labeling.chrome_ball import M_CAM_TO_ENV
        from dr.shards.envmap import sample_env

        lo, hi = ball_box(s)
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        v, u = np.meshgrid(np.arange(lo, hi) + 0.5, np.arange(lo, hi) + 0.5, indexing="ij")
        d = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], -1)
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        c = np.array([(s.size / 2 - cx) / fx, -(s.size / 2 - cy) / fy, -1.0])
        c /= np.linalg.norm(c)
        edge = np.array([(s.size / 2 + s.ball / 2 - cx) / fx, -(s.size / 2 - cy) / fy, -1.0])
        alpha = np.arccos(edge @ c / np.linalg.norm(edge))
        C = c / np.sin(alpha)  # a unit sphere seen at the ball's size
        b = (d * C).sum(-1)
        disc_ = b * b - (C @ C - 1)
        t = b - np.sqrt(np.maximum(disc_, 0))
        n = d * t[..., None] - C
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        r = d - 2 * (d * n).sum(-1, keepdims=True) * n
        radiance = sample_env(self.env, r @ M_CAM_TO_ENV.T)
        radiance[disc_ < 0] = 0
        self.calls += len(s.evs)
        return {ev: np.clip(radiance * 2.0 ** ev, 0, 1) ** (1 / 2.4) for ev in s.evs}


def test_the_estimate_is_the_painted_ball_merged_and_unwrapped_through_the_frames_camera():
    """A frame of a wide lens (landscape, letterboxed) and a painter that paints the true ball: the estimate
    comes back as the environment (smooth, HDR up to 30x, so the bracket is needed), the perspective
    unwrap closer than DiffusionLight's orthographic one."""
    from dr.labeling.light import estimate_light, letterbox

    h = 32
    v, u = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(2 * h) + 0.5) / (2 * h), indexing="ij")
    env = np.stack([0.3 + 0.2 * np.cos(2 * np.pi * u), 0.4 + 0.1 * np.sin(2 * np.pi * u), 0.3 + 0.2 * v], -1)
    env += 30.0 * np.exp(-((u - 0.3) ** 2 + (v - 0.35) ** 2) / 0.01)[..., None]  # a bright sun, clipped at EV 0
    env = env.astype(np.float32)
    H, W = 100, 160
    K = np.array([[60.0, 0, 81.0], [0, 60.0, 49.0], [0, 0, 1]])  # 106 degrees across: a wide lens
    s = PaintSettings(size=256, ball=96, dilate=8)
    _, K_square = letterbox(np.zeros((H, W, 3), np.float32), K, s.size)
    assert np.allclose(K_square, [[96.0, 0, 129.6], [0, 96.0, 78.4 + 48], [0, 0, 1]])  # scaled 1.6, 48 rows of black above
    rgb = np.full((H, W, 3), 0.2, np.float32)
    errs = {}
    for method in ("perspective", "orthographic"):
        est = estimate_light(MirrorPainter(env, K_square), rgb, K, s, h, method)
        rel = np.abs(est.env - env).mean(-1) / env.mean(-1)
        errs[method] = float(np.median(rel[est.valid]))
        assert est.env.shape == (h, 2 * h, 3) and est.paintings == 3 and est.valid.mean() > 0.5
    # measured: median relative error 0.0004 (perspective), 0.088 (orthographic)
    assert errs["perspective"] < 0.01 and errs["perspective"] < 0.2 * errs["orthographic"], errs
