"""Single-step renderers (Ouroboros) on the tiny base: pyramid noise against its analytic properties,
the single-step pipeline against the scheduler's one-step Euler sample, the pixel losses against
hand-computed values, the training loss of the normal pass against the evaluation's mean angle, the
single-step forward renderer's loss against its pipeline's output; long videos (window blending and the
carried latent by hand, windows that see only their own frames); and the inverse renderer's
augmentations (zoom, mirror) against the frame they are cut from."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dr.models import edm  # noqa: E402
from dr.models.base import tiny_base  # noqa: E402
from dr.models.build import new_forward_renderer, new_inverse_renderer  # noqa: E402
from dr.models.noise import input_noise, pyramid_noise  # noqa: E402
from dr.models.pipelines import (ForwardRendererPipeline, InverseRendererPipeline, decode_latents,  # noqa: E402
                                 run_windows)
from dr.train import image_metrics as im  # noqa: E402
from dr.train.loss import angle_loss, mse_loss, ssi_depth_loss  # noqa: E402


@pytest.fixture(scope="module")
def base():
    return tiny_base(0)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_pyramid_noise_has_unit_variance_and_the_levels_its_size_allows():
    g = torch.Generator().manual_seed(0)
    # level i is (h, w) / r_1...r_i with each r in [2, 4): it exists when 4^i <= h and never when 2^i > h
    for size, lo, hi in ((4, 1, 1), (16, 2, 3), (64, 3, 5), (256, 4, 7), (1, 0, 0)):
        for _ in range(20):
            noise, levels = pyramid_noise((3, 4, size, size), g)
            assert lo <= levels <= hi, (size, levels)
            if size > 1:
                assert abs(float(noise.std()) - 1.0) < 1e-5
    _, levels = pyramid_noise((1, 4, 256, 256), g, levels=2)
    assert levels == 2
    # the coarse levels correlate neighbouring pixels; white noise does not (its correlation is about 0)
    noise, _ = pyramid_noise((8, 4, 64, 64), g)
    white = torch.randn(8, 4, 64, 64, generator=g)

    def neighbour_corr(x):
        a, b = x[..., :, :-1].flatten(), x[..., :, 1:].flatten()
        return float(((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std()))

    assert neighbour_corr(noise) > 0.3 and abs(neighbour_corr(white)) < 0.03
    assert torch.equal(input_noise("zero", (2, 4, 8, 8)), torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match="input noise"):
        input_noise("pink", (2, 4, 8, 8))


def test_the_single_step_pipeline_is_the_one_step_euler_sample_from_sigma_max(base, tmp_path):
    multi = new_inverse_renderer(base)
    multi.set_progress_bar_config(disable=True)
    video = _rand(1, 4, 3, 32, 32)
    # a one-step Euler sample of the scheduler's Karras levels starts at sigma_max and lands on x0
    ref = multi(video, num_inference_steps=1, generator=torch.Generator().manual_seed(3), output_type="latent")
    single = InverseRendererPipeline(**multi.components, single_step=True)
    single.set_progress_bar_config(disable=True)
    calls = []
    hook = single.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    got = single(video, generator=torch.Generator().manual_seed(3), output_type="latent")
    hook.remove()
    assert calls == [5]  # one evaluation, every pass in one batch
    for p in ref:  # Euler's x + (x0 - x) (0 - sigma) / sigma cancels latents of size 700 in float32: 1e-4 apart
        assert float((got[p] - ref[p]).abs().max()) < 3e-4, p
    with pytest.raises(ValueError, match="runs 1 step"):
        single(video, num_inference_steps=4)
    assert multi.default_steps == 20 and single.default_steps == 1
    # the mode and the input noise travel with the saved pipeline
    zero = InverseRendererPipeline(**multi.components, single_step=True, input_noise="zero")
    zero.save_pretrained(tmp_path)
    again = InverseRendererPipeline.from_pretrained(tmp_path)
    assert again.config.single_step is True and again.config.input_noise == "zero"
    again.set_progress_bar_config(disable=True)
    a = again(video, generator=torch.Generator().manual_seed(1))
    b = again(video, generator=torch.Generator().manual_seed(2))
    assert all((a[k] == b[k]).all() for k in a)  # zero noise: deterministic whatever the generator


def test_pixel_losses_by_hand():
    mask = torch.ones(1, 1, 1, 2, 2)
    mask[..., 1, 1] = 0
    true = torch.zeros(1, 1, 3, 2, 2)
    true[:, :, 2] = 1.0                                    # every normal +z
    pred = true.clone()
    pred[:, :, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0])    # one pixel at 90 degrees
    pred[:, :, :, 1, 0] = torch.tensor([0.0, 0.0, 5.0])    # one only longer: 0 degrees after normalising
    pred[:, :, :, 1, 1] = torch.tensor([0.0, 0.0, -1.0])   # masked out
    assert abs(float(angle_loss(pred, true, mask)) - (math.pi / 2) / 3) < 1e-3
    # depth: any scale and shift of the truth costs nothing; otherwise the least-squares residual
    d = torch.tensor([1.0, 2.0, 3.0, 10.0]).reshape(1, 1, 1, 2, 2)
    assert float(ssi_depth_loss(3 * d - 7, d, mask)) < 1e-10
    x = torch.tensor([0.0, 1.0, 0.0, 4.0]).reshape(1, 1, 1, 2, 2)
    # over the mask x = (0, 1, 0), d = (1, 2, 3): the fit of d on x is 2 + 0 x ... by hand:
    # mean x 1/3, mean d 2, cov = sum (x - 1/3)(d - 2) = 0, so a = 0 and the residual is d - 2: (1 + 0 + 1) / 3
    assert abs(float(ssi_depth_loss(x, d, mask)) - 2 / 3) < 1e-6
    assert abs(float(mse_loss(x.expand(1, 1, 3, 2, 2), d.expand(1, 1, 3, 2, 2), mask)) - (1 + 1 + 9) / 3) < 1e-6


def test_the_training_loss_of_the_normal_pass_is_the_mean_angle_the_evaluation_measures(base):
    from dr.train.objectives import SingleStepInverseObjective

    pipe = InverseRendererPipeline(**new_inverse_renderer(base).components, single_step=True, input_noise="zero")
    pipe.set_progress_bar_config(disable=True)
    objective = SingleStepInverseObjective(pipe, passes=("normal",), noise_kind="zero")
    video = _rand(2, 4, 3, 32, 32, seed=1)
    normal = _rand(2, 4, 3, 32, 32, seed=2)
    normal = normal / normal.norm(dim=2, keepdim=True)
    mask = (_rand(2, 4, 1, 32, 32, seed=3) > -0.5).float()
    with torch.no_grad():
        loss = float(objective({"rgb": video, "normal": normal, "mask": mask}, [torch.Generator() for _ in range(2)]))
    out = pipe(video, passes=("normal",))["normal"]                     # (B, T, H, W, 3), unit vectors
    angles = [im.angle_deg(torch.from_numpy(out[i]), normal[i].permute(0, 2, 3, 1), mask[i, :, 0] > 0.5)
              for i in range(2)]
    # the loss pools the pixels of both clips; the metric averages per clip: weight by the clips' masks
    pooled = sum(a * float(mask[i].sum()) for i, a in enumerate(angles)) / float(mask.sum())
    assert abs(math.degrees(loss) - pooled) < 0.05
    # and the loss is what the UNet is trained on: it has gradients for its weights
    objective(dict(rgb=video, normal=normal, mask=mask), [torch.Generator() for _ in range(2)]).backward()
    assert pipe.unet.conv_in.weight.grad is not None and float(pipe.unet.conv_in.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in pipe.vae.parameters())  # the decoder is frozen, not trained
    assert edm.SIGMA_MAX == float(pipe.scheduler.config.sigma_max)


def _gbuffers(t, seed=0, size=32):
    gb = {p: _rand(1, t, 3, size, size, seed=seed + i) for i, p in enumerate(("basecolor", "normal", "depth",
                                                                              "roughness", "metallic"))}
    return gb, _rand(1, t, 9, 16, 16, seed=seed + 9)


def test_the_single_step_forward_renderer_is_one_unguided_euler_step_and_trains_on_its_own_output(base):
    from dr.train.objectives import SingleStepForwardObjective

    multi = new_forward_renderer(base, seed=0)
    multi.set_progress_bar_config(disable=True)
    with torch.no_grad():  # the new conv_in channels and attn2 start at zero: give the conditions a say
        for prm in multi.unet.parameters():
            prm.add_(torch.randn(prm.shape, generator=torch.Generator().manual_seed(prm.numel())) * 0.02)
    gb, env = _gbuffers(4)
    ref = multi(gb, env, num_inference_steps=1, guidance_scale=1.0, generator=torch.Generator().manual_seed(3),
                output_type="latent")
    single = ForwardRendererPipeline(**multi.components, single_step=True)
    single.set_progress_bar_config(disable=True)
    calls = []
    hook = single.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    got = single(gb, env, generator=torch.Generator().manual_seed(3), output_type="latent")
    hook.remove()
    assert calls == [1]  # one evaluation and no unconditional branch
    assert float((got - ref).abs().max()) < 3e-4
    guided = multi(gb, env, num_inference_steps=1, generator=torch.Generator().manual_seed(3), output_type="latent")
    assert float((guided - ref).abs().max()) > 1e-3  # the multi-step default (1.2) is guided; the conditions count
    with pytest.raises(ValueError, match="without guidance"):
        single(gb, env, guidance_scale=1.2)
    with pytest.raises(ValueError, match="runs 1 step"):
        single(gb, env, num_inference_steps=20)

    # the training loss is the squared error of what the pipeline renders (zero input noise: deterministic)
    zero = ForwardRendererPipeline(**multi.components, single_step=True, input_noise="zero")
    zero.set_progress_bar_config(disable=True)
    objective = SingleStepForwardObjective(zero, noise_kind="zero")
    rgb = _rand(1, 4, 3, 32, 32, seed=20)
    batch = {**gb, "rgb": rgb, "env": env}
    with torch.no_grad():
        loss = float(objective(batch, [torch.Generator()]))
        rendered = decode_latents(zero.vae, zero(gb, env, output_type="latent")).float()
    assert abs(loss - float(((rendered - rgb) ** 2).mean())) < 1e-5 * max(1.0, loss)
    objective(batch, [torch.Generator()]).backward()
    assert float(zero.unet.conv_in.weight.grad.abs().sum()) > 0
    assert any(prm.grad is not None and float(prm.grad.abs().sum()) > 0 for prm in zero.env_encoder.parameters())
    assert all(prm.grad is None for prm in zero.vae.parameters())


def test_the_cycle_losses_are_what_the_two_pipelines_give_when_chained(base):
    from dr.models.pipelines import FORWARD_CONDITIONS, RendererPair
    from dr.train.loss import pass_loss
    from dr.train.objectives import CycleObjective

    def perturbed(pipe):
        with torch.no_grad():
            for prm in pipe.unet.parameters():
                prm.add_(torch.randn(prm.shape, generator=torch.Generator().manual_seed(prm.numel() + 1)) * 0.02)
        return pipe

    fwd = perturbed(new_forward_renderer(base, seed=2))
    inv = perturbed(new_inverse_renderer(base, seed=3))
    pair = RendererPair(ForwardRendererPipeline(**fwd.components, single_step=True, input_noise="zero"),
                        InverseRendererPipeline(**inv.components, single_step=True, input_noise="zero"))
    for p in (pair.forward, pair.inverse):
        p.set_progress_bar_config(disable=True)
    objective = CycleObjective(pair, cycle_weight=0.5)
    gb, env = _gbuffers(4, seed=30)
    rgb = _rand(1, 4, 3, 32, 32, seed=40)
    gb["normal"] = gb["normal"] / gb["normal"].norm(dim=2, keepdim=True)
    mask = (_rand(1, 4, 1, 32, 32, seed=41) > -0.5).float()
    batch = {**gb, "rgb": rgb, "env": env, "mask": mask}
    with torch.no_grad():
        parts = {k: float(v) for k, v in objective.parts(batch, [torch.Generator()]).items()}
        total = float(objective(batch, [torch.Generator()]))
        # the same through the pipelines, passes handed over by name
        passes = pair.inverse(rgb, output_type="latent")
        cyc_rgb = decode_latents(pair.vae, pair.forward(None, env, output_type="latent", gbuffer_latents=torch.cat(
            [passes[p] for p in FORWARD_CONDITIONS], dim=2))).float()
        video = pair.forward(gb, env, output_type="latent")
        cyc_g = pair.inverse(None, output_type="latent", video_latents=video)
        ones = torch.ones_like(mask)
        want = {"inverse": sum(float(pass_loss(p, decode_latents(pair.vae, passes[p]).float(), gb[p], mask))
                               for p in passes),
                "forward": float(pass_loss("rgb", decode_latents(pair.vae, video).float(), rgb, ones)),
                "rgb_cycle": float(pass_loss("rgb", cyc_rgb, rgb, ones)),
                "gbuffer_cycle": sum(float(pass_loss(p, decode_latents(pair.vae, cyc_g[p]).float(), gb[p], mask))
                                     for p in cyc_g)}
    for k in want:
        assert abs(parts[k] - want[k]) < 1e-4 * max(1.0, want[k]), (k, parts[k], want[k])
    assert abs(total - (want["inverse"] + want["forward"] + 0.5 * (want["rgb_cycle"] + want["gbuffer_cycle"]))) < 1e-3
    # the cycle trains both renderers through each other
    objective(batch, [torch.Generator()]).backward()
    for unet in pair.unets:
        assert float(unet.conv_in.weight.grad.abs().sum()) > 0
    assert float(pair.inverse.pass_embedding.embedding.weight.grad.abs().sum()) > 0


def test_windows_blend_and_carry_the_latent_by_hand():
    noise = torch.arange(6.0).reshape(1, 6, 1, 1, 1)
    seen = []

    def denoise(frames, start):  # a stand-in network: x0 = 10 x its start + 1
        seen.append((frames.start, start.flatten().tolist()))
        return 10 * start + 1

    # window 4, overlap 2: windows at 0 and 2, sharing frames 2 and 3
    out = run_windows(noise, 4, 2, denoise, carry=0.0).flatten().tolist()
    assert seen == [(0, [0, 1, 2, 3]), (2, [2, 3, 4, 5])]
    # x0: window 0 (1, 11, 21, 31), window 1 (21, 31, 41, 51); frames 2 and 3 blended 2/3 : 1/3 and 1/3 : 2/3
    assert out == pytest.approx([1, 11, 21, 31, 41, 51])
    seen.clear()
    out = run_windows(noise, 4, 2, denoise, carry=0.5).flatten().tolist()
    # window 1 starts from 0.5 x window 0's x0 + 0.5 x noise on frames 2 and 3: 0.5 (21 + 2), 0.5 (31 + 3)
    assert seen == [(0, [0, 1, 2, 3]), (2, [11.5, 17.0, 4.0, 5.0])]
    # its x0: 116, 171, 41, 51
    assert out == pytest.approx([1, 11, 2 / 3 * 21 + 1 / 3 * 116, 1 / 3 * 31 + 2 / 3 * 171, 41, 51])
    assert run_windows(noise, 8, 2, denoise).flatten().tolist() == pytest.approx([1, 11, 21, 31, 41, 51])
    with pytest.raises(ValueError, match="carry"):
        run_windows(noise, 4, 2, denoise, carry=1.5)


@pytest.mark.parametrize("kind", ["forward", "inverse"])
def test_a_long_clip_runs_in_windows_that_each_see_only_their_own_frames(kind, base):
    build = new_forward_renderer if kind == "forward" else new_inverse_renderer
    cls = ForwardRendererPipeline if kind == "forward" else InverseRendererPipeline
    with torch.no_grad():
        made = build(base, seed=1)
        for prm in made.unet.parameters():
            prm.add_(torch.randn(prm.shape, generator=torch.Generator().manual_seed(prm.numel())) * 0.02)
    pipe = cls(**made.components, single_step=True, input_noise="zero")
    pipe.set_progress_bar_config(disable=True)
    if kind == "forward":
        gb, env = _gbuffers(6, seed=4)

        def run(lo, hi, **kw):
            return pipe({p: x[:, lo:hi] for p, x in gb.items()}, env[:, lo:hi], output_type="latent", **kw)
    else:
        video = _rand(1, 6, 3, 32, 32, seed=5)

        def run(lo, hi, **kw):
            return torch.stack(list(pipe(video[:, lo:hi], output_type="latent", **kw).values()))
    first, second = run(0, 4), run(2, 6)   # each window's frames on their own
    whole = run(0, 6, window=4, overlap=2)
    f = (slice(None),) * (first.ndim - 4)  # the leading (pass,) batch dimensions
    # frames 0, 1 are the first window's alone, frames 4, 5 the second's; 2 and 3 blend 2/3 : 1/3, 1/3 : 2/3
    assert torch.equal(whole[f + (slice(0, 2),)], first[f + (slice(0, 2),)])
    assert torch.equal(whole[f + (slice(4, 6),)], second[f + (slice(2, 4),)])
    for k, (a, b) in enumerate(((2 / 3, 1 / 3), (1 / 3, 2 / 3))):
        blend = a * first[f + (2 + k,)] + b * second[f + (k,)]
        assert float((whole[f + (2 + k,)] - blend).abs().max()) < 1e-5
    carried = run(0, 6, window=4, overlap=2, carry=0.1)
    assert torch.equal(carried[f + (slice(0, 2),)], whole[f + (slice(0, 2),)])
    assert float((carried[f + (slice(4, 6),)] - whole[f + (slice(4, 6),)]).abs().max()) > 1e-6  # the carry reaches them


def _clip(t=4, h=48, w=64):
    from dr.shards.reader import Sample

    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    depth = np.broadcast_to((1.0 + xx * 1000.0 + yy)[None, ..., None], (t, h, w, 1)).astype(np.float32)
    normal = rng.normal(size=(t, h, w, 3))
    passes = {"rgb": rng.random((t, h, w, 3)), "basecolor": rng.random((t, h, w, 3)),
              "roughness": rng.random((t, h, w, 1)), "metallic": rng.random((t, h, w, 1)),
              "normal": normal / np.linalg.norm(normal, axis=-1, keepdims=True), "depth": depth,
              "mask": np.ones((t, h, w, 1))}
    return Sample(key="c", meta={"frames": t}, passes={k: v.astype(np.float32) for k, v in passes.items()})


def test_zoom_cuts_a_smaller_part_of_the_frame_and_flip_mirrors_it_with_the_normal_x_negated():
    from dr.train.data import clip_view

    clip = _clip()
    # metric depth encodes each pixel's column and row (1000 col + row + 1) and is resized nearest: the
    # view says where in the frame each of its pixels came from
    spans = []
    for seed in range(12):
        v = clip_view(clip, 2, 16, 16, np.random.default_rng(seed), None, zoom=2.0)
        d = v["depth_m"][0, 0].numpy() - 1.0
        cols, rows = np.round(d / 1000.0), np.round(d % 1000.0)
        assert (np.diff(cols, axis=1) >= 0).all() and (np.diff(rows, axis=0) >= 0).all()  # an upright crop
        spans.append(rows[-1, 0] - rows[0, 0] + 1)                                       # frame rows covered
    # without zoom 16 rows of the 48 px frame cover all of it (16 / 48 scale); at a factor in [1, 2) a
    # view covers between 48 / 2 and 48 rows, and the draws do not all sit at one end
    assert all(23 <= s <= 48 for s in spans) and min(spans) < 40 and max(spans) > 30, spans
    plain = clip_view(clip, 2, 16, 16, np.random.default_rng(0), None)
    assert np.round((plain["depth_m"][0, 0, -1, 0].numpy() - 1) % 1000) >= 44  # the whole height

    mirrored = 0
    for seed in range(8):
        a = clip_view(clip, 2, 16, 16, np.random.default_rng(seed), None, zoom=1.5)
        b = clip_view(clip, 2, 16, 16, np.random.default_rng(seed), None, zoom=1.5, flip=True)
        if torch.equal(a["rgb"], b["rgb"]):
            assert all(torch.equal(a[k], b[k]) for k in a)
            continue
        mirrored += 1  # the same crop, mirrored: columns reversed, the normal's x (camera right) negated
        for k in a:
            want = a[k].flip(-1)
            if k == "normal":
                want = want * torch.tensor([-1.0, 1.0, 1.0]).reshape(1, 3, 1, 1)
            assert torch.equal(b[k], want), k
    assert 1 <= mirrored <= 7
    with pytest.raises(ValueError, match="inverse renderer"):
        clip_view(clip, 2, 16, 16, np.random.default_rng(0), (8, 16), flip=True)
