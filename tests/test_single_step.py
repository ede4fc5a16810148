"""Single-step renderers (Ouroboros) on the tiny base: pyramid noise against its analytic properties,
the single-step pipeline against the scheduler's one-step Euler sample, the pixel losses against
hand-computed values, the training loss of the normal pass against the evaluation's mean angle; and
the inverse renderer's augmentations (zoom, mirror) against the frame they are cut from."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dr.models import edm  # noqa: E402
from dr.models.base import tiny_base  # noqa: E402
from dr.models.build import new_inverse_renderer  # noqa: E402
from dr.models.noise import input_noise, pyramid_noise  # noqa: E402
from dr.models.pipelines import InverseRendererPipeline  # noqa: E402
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
