"""dr/models on the tiny base: the UNet surgery against the base's own outputs, the env encoder's
sizes, the window blending against hand-computed weights, EDM against diffusers' scheduler, and
save/load of both pipelines (bitwise the same output)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from dr.models import edm  # noqa: E402
from dr.models.base import tiny_base  # noqa: E402
from dr.models.build import new_forward_renderer, new_inverse_renderer  # noqa: E402
from dr.models.env_encoder import EnvEncoder  # noqa: E402
from dr.models.pipelines import (  # noqa: E402
    FORWARD_CONDITIONS,
    ForwardRendererPipeline,
    InverseRendererPipeline,
    added_time_ids,
    blend_weights,
    window_starts,
)

STEM = (16, 32, 32, 32)


@pytest.fixture(scope="module")
def base():
    return tiny_base(0)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_inverse_unet_keeps_every_base_weight(base):
    pipe = new_inverse_renderer(base)
    x = _rand(2, 3, 8, 16, 16)
    ctx = _rand(2, 1, 32, seed=1)
    t = torch.tensor(0.3)
    with torch.no_grad():
        want = base.unet(x, t, ctx, added_time_ids(2, "cpu", torch.float32)).sample
        got = pipe.unet(x, t, ctx, added_time_ids(2, "cpu", torch.float32)).sample
    assert torch.equal(got, want)


def test_forward_unet_surgery(base):
    pipe = new_forward_renderer(base, STEM)
    unet = pipe.unet
    assert unet.conv_in.weight.shape[1] == 24
    assert torch.equal(unet.conv_in.weight[:, :8], base.unet.conv_in.weight)
    assert float(unet.conv_in.weight.detach()[:, 8:].abs().max()) == 0.0
    names = [n for n, _ in unet.named_parameters()]
    assert not [n for n in names if "temporal_transformer_blocks" in n and "attn2" in n]
    assert [n for n in names if ".transformer_blocks." in n and "attn2.to_k" in n]
    # the level-0 context is as wide as level 0 (32), level 1 as wide as level 1 (64)
    assert unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight.shape == (32, 32)
    assert unet.mid_block.attentions[0].transformer_blocks[0].attn2.to_k.weight.shape == (64, 64)

    b, t = 1, 3
    x = _rand(b, t, 24, 16, 16)
    tokens = pipe.env_encoder.tokens(_rand(b * t, 9, 64, 64, seed=2))
    ids = added_time_ids(b, "cpu", torch.float32)
    sigma = torch.tensor(0.5)
    with torch.no_grad():
        out = unet(x, sigma, tokens, ids).sample
        # the new channels start at zero weight: what they carry does not change the output yet
        x2 = x.clone()
        x2[:, :, 8:] = _rand(b, t, 16, 16, 16, seed=3)
        assert torch.equal(unet(x2, sigma, tokens, ids).sample, out)
        # each level's context is used: changing only the last level's tokens changes the output
        changed = [tokens[0], tokens[1] + 1.0]
        assert float((unet(x, sigma, changed, ids).sample - out).abs().max()) > 1e-4
        # and the contexts are per frame: changing frame 2's changes frame 2 most
        per_frame = [tok.clone() for tok in tokens]
        per_frame[0][2] += 1.0
        d = (unet(x, sigma, per_frame, ids).sample - out).abs().flatten(2).amax(2)[0]
        assert float(d[2]) > 1e-4


def test_env_encoder_levels():
    enc = EnvEncoder(stem_channels=(16, 32, 96, 256), block_out_channels=(32, 64, 64, 64))
    maps = enc(torch.zeros(2, 9, 128, 128))
    assert [tuple(m.shape) for m in maps] == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 64, 4, 4), (2, 64, 2, 2)]
    toks = enc.tokens(torch.zeros(2, 9, 128, 128))
    assert [tuple(t.shape) for t in toks] == [(2, 256, 32), (2, 64, 64), (2, 16, 64), (2, 4, 64)]


def test_windows_by_hand():
    assert window_starts(24, 24, 6) == [0]
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(11, 4, 1) == [0, 3, 6, 7]
    w = blend_weights([0, 2, 4, 6], 4, 10)
    assert torch.allclose(w.sum(0), torch.ones(10, dtype=torch.float64))
    # frames 2-3 are shared by windows 0 and 1: ramps 2/3, 1/3 (window 0) against 1/3, 2/3 (window 1)
    assert torch.allclose(w[:, 2], torch.tensor([2 / 3, 1 / 3, 0, 0], dtype=torch.float64))
    assert torch.allclose(w[:, 3], torch.tensor([1 / 3, 2 / 3, 0, 0], dtype=torch.float64))
    assert torch.allclose(w[:, 0], torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    assert torch.allclose(w[:, 9], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64))


def test_edm_matches_the_svd_scheduler(base):
    sched = base.scheduler
    sched.set_timesteps(5)
    sample = _rand(1, 2, 4, 8, 8)
    out = _rand(1, 2, 4, 8, 8, seed=1)
    for i in (0, 2, 4):
        sched._step_index = i
        sigma = sched.sigmas[i]
        want = sched.step(out, sched.timesteps[i], sample).pred_original_sample
        assert torch.allclose(edm.denoise(out, sample, sigma.reshape(1)), want, atol=1e-5)
        assert torch.allclose(edm.c_noise(sigma), sched.timesteps[i].float(), atol=1e-5)
        sched._step_index = i
        assert torch.allclose(sched.scale_model_input(sample, sched.timesteps[i]), edm.c_in(sigma) * sample, atol=1e-6)
    sig = edm.sample_sigma(200_000, torch.Generator().manual_seed(0)).log()
    assert abs(float(sig.mean()) - 0.7) < 0.02 and abs(float(sig.std()) - 1.6) < 0.02


def test_edm_loss_is_the_weighted_x0_error_at_the_configured_noise_levels():
    from types import SimpleNamespace

    from dr.train.loss import edm_loss

    x0, cond = _rand(2, 2, 4, 4, 4), _rand(2, 2, 4, 4, 4, seed=1)

    def unet(inp, c_noise, ctx, ids):  # a fixed stand-in network: F = 0.5 (c_in x_noisy) + c_noise
        return SimpleNamespace(sample=0.5 * inp[:, :, :4] + c_noise.reshape(-1, 1, 1, 1, 1))

    for mean, std in ((0.7, 1.6), (2.5, 0.5)):
        got = edm_loss(unet, x0, cond, None, [torch.Generator().manual_seed(i) for i in (0, 1)], mean, std)
        hand = []
        for i in (0, 1):  # each row's generator draws its ln sigma, then its noise
            g = torch.Generator().manual_seed(i)
            sigma = float(torch.exp(mean + std * torch.randn(1, generator=g)))
            noisy = x0[i] + sigma * torch.randn(x0[i].shape, generator=g)
            f = 0.5 * noisy / (sigma**2 + 1) ** 0.5 + 0.25 * torch.log(torch.tensor(sigma))
            x0_hat = noisy / (sigma**2 + 1) - sigma / (sigma**2 + 1) ** 0.5 * f
            hand.append((1 + sigma**2) / sigma**2 * ((x0_hat - x0[i]) ** 2).mean())
        assert torch.allclose(got, torch.stack(hand).mean(), rtol=1e-5)


def _gbuffers(b, t, size, seed=0):
    return {p: _rand(b, t, 3, size, size, seed=seed + i) for i, p in enumerate(FORWARD_CONDITIONS)}


def test_forward_pipeline_roundtrip(base, tmp_path):
    pipe = new_forward_renderer(base, STEM)
    pipe.set_progress_bar_config(disable=True)
    g, env = _gbuffers(1, 3, 32), _rand(1, 3, 9, 32, 32, seed=9)
    a = pipe(g, env, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1, 3, 32, 32, 3) and a.min() >= 0 and a.max() <= 1
    pipe.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env_encoder", "model_index.json", "scheduler", "unet", "vae"]
    assert list((tmp_path / "unet").glob("*.safetensors"))
    again = ForwardRendererPipeline.from_pretrained(tmp_path)
    again.set_progress_bar_config(disable=True)
    b = again(g, env, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert (a == b).all()
    # the guidance branch is used: no guidance gives another video
    c = again(g, env, num_inference_steps=2, guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert abs(c - a).max() > 1e-4


def test_inverse_pipeline_batches_passes_and_windows(base, tmp_path):
    pipe = new_inverse_renderer(base)
    pipe.set_progress_bar_config(disable=True)
    video = _rand(1, 6, 3, 32, 32)
    calls = []
    hook = pipe.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    out = pipe(video, num_inference_steps=2, window=4, overlap=2, generator=torch.Generator().manual_seed(0))
    hook.remove()
    # windows [0, 4) and [2, 6), two steps each, every pass in one batch of five
    assert calls == [5, 5, 5, 5]
    assert {k: v.shape for k, v in out.items()} == {
        "basecolor": (1, 6, 32, 32, 3), "metallic": (1, 6, 32, 32, 1), "roughness": (1, 6, 32, 32, 1),
        "normal": (1, 6, 32, 32, 3), "depth": (1, 6, 32, 32, 1)}
    assert abs(float((torch.from_numpy(out["normal"]) ** 2).sum(-1).mean()) - 1.0) < 1e-4
    pipe.save_pretrained(tmp_path)
    again = InverseRendererPipeline.from_pretrained(tmp_path)
    again.set_progress_bar_config(disable=True)
    out2 = again(video, num_inference_steps=2, window=4, overlap=2, generator=torch.Generator().manual_seed(0))
    assert all((out[k] == out2[k]).all() for k in out)
