"""dr-train on shards made by `dr-data generate` in the test: the data stream (held-out clips, ranks,
exact resume), init-tiny's fitted VAE, forward and inverse runs end to end, checkpoints that
reload bitwise, a stopped run continued to the same losses as an uninterrupted one, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli

torch = pytest.importorskip("torch")

N = 6


@pytest.fixture(scope="module")
def shards_run(tmp_path_factory):
    """Six tiny clips (64 x 64, 4 frames) in three shards, rendered by the real command."""
    ray_tmp = tempfile.mkdtemp(prefix="drray-", dir="/tmp")
    try:
        out = tmp_path_factory.mktemp("data") / "run"
        r = run_cli("generate", "--n", str(N), "--out", str(out), "--preset", "tiny", "--clips-per-shard", "2",
                    env={"DR_RAY_TEMP_DIR": ray_tmp}, timeout=900)
        assert r.returncode == 0, r.stderr
        return out
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def train_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dr.cli.train_app", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def train_cli_here(capfd, *args: str) -> subprocess.CompletedProcess:
    """`dr-train ARGS` run by the command's own entry (dr.cli.runner.run) in this interpreter, its output
    read from the file descriptors: for input that the command must refuse and for the second half of a
    stopped-and-continued run, where a fresh interpreter would spend its 5 s importing diffusers. Every
    test also runs the real command in a fresh interpreter."""
    from dr.cli.runner import run
    from dr.cli.train_app import app

    capfd.readouterr()
    rc = run(app, "dr-train", list(args))
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(list(args), rc, out, err)


@pytest.fixture(scope="module")
def tiny_base_dir(shards_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    r = train_cli("init-tiny", "--out", str(out), "--data", str(shards_run), "--vae-steps", "80")
    assert r.returncode == 0, r.stderr
    return out / "svd"


def test_the_stream_holds_out_by_hash_splits_ranks_and_resumes_exactly(shards_run):
    from dr.shards.reader import iter_samples
    from dr.train.data import ClipDataset, is_held_out

    keys = [s.key for s in iter_samples(str(shards_run), passes=(), with_env=False)]
    held = {k for k in keys if is_held_out(k, 0.3)}
    assert 0 < len(held) < N  # the hash splits these six ids

    def stream(n, **kw):
        ds = ClipDataset([str(shards_run)], 3, 32, 32, (8, 16), seed=3, holdout_fraction=0.3, shuffle_buffer=2, **kw)
        it = iter(ds)
        return [next(it) for _ in range(n)]

    full = stream(12)
    assert not {v["key"] for v in full} & held
    assert {v["key"] for v in full} == set(keys) - held  # two epochs of every training clip
    v = full[0]
    assert v["rgb"].shape == (3, 3, 32, 32) and v["env"].shape == (3, 9, 8, 16) and v["mask"].shape == (3, 1, 32, 32)
    assert float(v["rgb"].min()) >= -1 and float(v["rgb"].max()) <= 1
    norms = (v["normal"] ** 2).sum(1)[v["mask"][:, 0] > 0]
    assert abs(float(norms.mean()) - 1) < 0.05  # unit normals on surfaces survive the resize
    resumed = stream(7, skip={0: 5})
    for a, b in zip(full[5:], resumed):
        assert a["key"] == b["key"] and all(torch.equal(a[k], b[k]) for k in ("rgb", "depth", "env"))
    # two ranks: disjoint shards, together all of them
    r0 = {v["key"] for v in stream(8, rank=0, world_size=2)}
    r1 = {v["key"] for v in stream(8, rank=1, world_size=2)}
    assert not r0 & r1 or len(set(keys) - held) < 2 * 2  # shards dealt whole where there are enough
    assert r0 | r1 == set(keys) - held


def test_init_tiny_writes_an_svd_folder_whose_vae_reconstructs(tiny_base_dir, shards_run):
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    assert json.loads((tiny_base_dir / "model_index.json").read_text())["_class_name"] == "StableVideoDiffusionPipeline"
    UNetSpatioTemporalConditionModel.from_pretrained(tiny_base_dir, subfolder="unet")
    AutoencoderKLTemporalDecoder.from_pretrained(tiny_base_dir, subfolder="vae")
    rep = json.loads((tiny_base_dir / "vae_fit.json").read_text())
    # the fitted VAE reconstructs clips left out of the fit better than the random one did (80 steps
    # here; the default 1500 go much further)
    assert rep["held_out_clips"] >= 1 and rep["vae_steps"] == 80
    gain = {p: rep["psnr_db"][p] - rep["psnr_db_random"][p] for p in rep["psnr_db"]}
    assert sum(gain.values()) / len(gain) > 1.5, gain
    assert gain["rgb"] > 2.0 and gain["basecolor"] > 2.0, gain
    # and its latents are scaled to unit spread, as the diffusion's noise levels assume
    vae = AutoencoderKLTemporalDecoder.from_pretrained(tiny_base_dir, subfolder="vae")
    assert vae.config.scaling_factor != 0.18215
    from dr.models.pipelines import encode_frames
    from dr.shards.reader import iter_samples
    from dr.train.vae_fit import pass_views

    views = pass_views(list(iter_samples(str(shards_run))), 4, 64)
    with torch.no_grad():
        z = torch.cat([encode_frames(vae, v) for v in views.values()])
    assert 0.7 < float(z.std()) < 1.4, float(z.std())


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["step_loss"] for r in map(json.loads, (out / "logs" / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("kind", ["inverse", "forward"])
def test_a_run_trains_checkpoints_reloads_bitwise_and_continues_exactly(kind, shards_run, tiny_base_dir, tmp_path,
                                                                         capfd):
    common = ["--data", str(shards_run), "--base", str(tiny_base_dir), "--preset", "tiny",
              "--set", "train.checkpoint_every=2"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    r = train_cli(kind, *common, "--out", str(whole), "--max-steps", "4")
    assert r.returncode == 0, r.stderr
    assert (whole / "checkpoints" / "latest").read_text().strip() == "step-0000004"
    assert sorted(p.name for p in (whole / "checkpoints").glob("step-*")) == ["step-0000002", "step-0000004"]
    run = json.loads((whole / "run.json").read_text())
    assert run["identity"]["kind"] == kind and len(run["sessions"]) == 1

    # the stopped and continued run in this interpreter (the entry the command runs; no 5 s of imports)
    r = train_cli_here(capfd, kind, *common, "--out", str(part), "--max-steps", "2")
    assert r.returncode == 0, r.stderr
    r = train_cli_here(capfd, kind, *common, "--out", str(part), "--max-steps", "4")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr + r.stdout
    a, b = _losses(whole), _losses(part)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert a == b  # the continued run saw the same clips, noise and weights
    assert len(set(a.values())) == 4

    # the checkpoint is a pipeline in diffusers layout; two loads give the same output bit for bit
    from dr.models.pipelines import ForwardRendererPipeline, InverseRendererPipeline

    cls = ForwardRendererPipeline if kind == "forward" else InverseRendererPipeline
    ck = whole / "checkpoints" / "step-0000004" / "pipeline"
    outs = []
    for _ in range(2):
        pipe = cls.from_pretrained(ck)
        pipe.set_progress_bar_config(disable=True)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(1, 4, 3, 32, 32, generator=g) * 2 - 1
        if kind == "forward":
            gb = {p: x for p in ("basecolor", "normal", "depth", "roughness", "metallic")}
            outs.append(pipe(gb, torch.zeros(1, 4, 9, 16, 16), num_inference_steps=2, generator=g))
        else:
            outs.append(pipe(x, num_inference_steps=2, generator=g)["normal"])
    assert np.array_equal(outs[0], outs[1])
    # and it holds the trained weights, not the base's
    from safetensors.torch import load_file

    trained = load_file(str(ck / "unet" / "diffusion_pytorch_model.safetensors"))
    first = load_file(str(whole / "checkpoints" / "step-0000002" / "pipeline" / "unet" /
                          "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(trained[k], first[k]) for k in trained)


def test_single_step_fine_tuning_from_a_checkpoint_resumes_exactly_and_evaluates_in_one_step(
        shards_run, tiny_base_dir, tmp_path, capfd):
    data = ["--data", str(shards_run), "--preset", "tiny"]
    multi = tmp_path / "multi"
    r = train_cli("inverse", *data, "--base", str(tiny_base_dir), "--out", str(multi), "--max-steps", "2")
    assert r.returncode == 0, r.stderr
    # the start: that checkpoint with its pass embedding tripled, as a bare pipeline folder
    from dr.models.pipelines import InverseRendererPipeline

    init = tmp_path / "init"
    start = InverseRendererPipeline.from_pretrained(multi / "checkpoints" / "step-0000002" / "pipeline")
    with torch.no_grad():
        start.pass_embedding.embedding.weight.mul_(3.0)
    start.save_pretrained(init)
    args = ["inverse", *data, "--init", str(init), "--single-step", "--set", "train.checkpoint_every=2",
            "--set", "train.input_noise=pyramid"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    r = train_cli(*args, "--out", str(whole), "--max-steps", "4")
    assert r.returncode == 0, r.stderr
    assert "starting from the checkpoint" in r.stdout + r.stderr
    for steps in ("2", "4"):
        r = train_cli_here(capfd, *args, "--out", str(part), "--max-steps", steps)
        assert r.returncode == 0, r.stderr
    a, b = _losses(whole), _losses(part)
    assert sorted(a) == [1, 2, 3, 4] and a == b and all(np.isfinite(list(a.values())))
    assert json.loads((whole / "run.json").read_text())["identity"]["base"] == f"init:{init}"
    done = whole / "checkpoints" / "step-0000004" / "pipeline"
    index = json.loads((done / "model_index.json").read_text())
    assert index["single_step"] is True and index["input_noise"] == "pyramid"
    # it went on from the tripled embedding: AdamW moves a weight by about lr (3e-4) a step
    trained = InverseRendererPipeline.from_pretrained(done).pass_embedding.embedding.weight.detach()
    moved = float((trained - start.pass_embedding.embedding.weight.detach()).abs().max())
    assert 0 < moved < 4 * 3e-4 * 1.5, moved

    r = train_cli("eval", str(whole), "--data", str(shards_run))
    assert r.returncode == 0, r.stderr
    assert json.loads((whole / "eval.json").read_text())["steps"] == 1
    bad = [
        (["eval", str(whole), "--data", str(shards_run), "--steps", "5"], "runs 1 step"),
        (["inverse", *data, "--out", str(tmp_path / "x")], "--base"),
        (["inverse", *data, "--base", str(tiny_base_dir), "--init", str(multi), "--out", str(tmp_path / "y")],
         "not both"),
        (["forward", *data, "--init", str(multi), "--out", str(tmp_path / "z")], "is an inverse renderer"),
    ]
    for argv, message in bad:
        r = train_cli_here(capfd, *argv)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)


def test_bad_input_is_one_line_and_exit_2(shards_run, tiny_base_dir, tmp_path, capfd):
    ok = ["--data", str(shards_run), "--base", str(tiny_base_dir), "--preset", "tiny"]
    cases = [
        (["inverse", "--data", str(tmp_path / "nothing"), "--base", str(tiny_base_dir), "--out", str(tmp_path / "a")],
         "holds no shards"),
        (["inverse", "--data", str(shards_run), "--base", str(tmp_path), "--preset", "tiny", "--out", str(tmp_path / "b")],
         "not a diffusers folder"),
        (["forward", *ok, "--out", str(tmp_path / "c"), "--max-steps", "0"], "--max-steps 0"),
        (["forward", *ok, "--out", str(tmp_path / "d"), "--set", "data.frames=9"], "clips of 4 frames"),
        (["forward", *ok, "--out", str(tmp_path / "e"), "--preset", "nope"], "unknown preset"),
    ]
    for i, (args, message) in enumerate(cases):
        r = train_cli(*args) if i == 0 else train_cli_here(capfd, *args)  # the first in a fresh interpreter
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    # a run of one kind is not continued by the other, nor by another config
    run = tmp_path / "inv"
    assert train_cli("inverse", *ok, "--out", str(run), "--max-steps", "1").returncode == 0
    for args, message in ((["forward", *ok], "inverse renderer"),
                          (["inverse", *ok, "--set", "optim.lr=0.1"], "config_hash")):
        r = train_cli_here(capfd, *args, "--out", str(run), "--max-steps", "1")
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_kill_9_mid_run_then_the_same_command_continues_with_the_same_losses(shards_run, tiny_base_dir, tmp_path):
    import os
    import signal
    import time

    args = ["inverse", "--data", str(shards_run), "--base", str(tiny_base_dir), "--preset", "tiny",
            "--max-steps", "8", "--set", "train.checkpoint_every=2"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = train_cli(*args, "--out", str(whole))
    assert r.returncode == 0, r.stderr
    log = open(tmp_path / "log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dr.cli.train_app", *args, "--out", str(killed)], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    latest = killed / "checkpoints" / "latest"
    deadline = time.monotonic() + 600
    while not (latest.is_file() and latest.read_text().strip() >= "step-0000004"):
        assert proc.poll() is None, (tmp_path / "log").read_text()
        assert time.monotonic() < deadline, "no second checkpoint in 600 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped_at = int(latest.read_text().strip().split("-")[1])
    assert stopped_at < 8, "the run was killed before its end"
    r = train_cli(*args, "--out", str(killed))
    assert r.returncode == 0, r.stderr
    assert f"step-{stopped_at:07d}" in r.stderr + r.stdout
    assert _losses(killed) == _losses(whole)
    assert not list((killed / "checkpoints").glob(".*.tmp")), "a checkpoint cut by the kill is cleared"


def test_two_gloo_processes_read_disjoint_shards_and_take_the_one_process_step(shards_run, tiny_base_dir, tmp_path):
    """`torchrun --nproc_per_node 2 -m dr.cli.train_app inverse ...` on CPUs (gloo): each process reads its
    own shards, and the step they take together is the one a single process takes on their two clips."""
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from dr.config import resolve_config
    from dr.models.base import load_base
    from dr.models.build import new_inverse_renderer
    from dr.train.config import TrainConfig
    from dr.train.data import ClipDataset, collate, list_clips
    from dr.train.objectives import InverseObjective
    from dr.train.trainer import optimiser, optimiser_step

    out = tmp_path / "two"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "dr.cli.train_app", "inverse", "--data", str(shards_run), "--base", str(tiny_base_dir),
                        "--preset", "tiny", "--max-steps", "1", "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (r.stdout + r.stderr).count("trained inverse renderer") == 1  # one process speaks for the run
    assert len(json.loads((out / "run.json").read_text())["sessions"]) == 1
    state = torch.load(out / "checkpoints" / "step-0000001" / "trainer_state.pt", weights_only=True)
    assert state["world_size"] == 2 and state["batches"] == 1

    # what each process's stream gave first (the tiny preset: one clip per process, no workers)
    cfg = resolve_config(TrainConfig, "tiny", None, ["train.max_steps=1"])
    d = cfg.data
    firsts = [next(iter(ClipDataset([str(shards_run)], d.frames, d.height, d.width, None, seed=cfg.train.seed,
                                    holdout_fraction=d.holdout_fraction, shuffle_buffer=d.shuffle_buffer,
                                    rank=rank, world_size=2))) for rank in (0, 1)]
    shard_of = {k: url for url, keys in list_clips([str(shards_run)]) for k in keys}
    assert shard_of[firsts[0]["key"]] != shard_of[firsts[1]["key"]]  # disjoint shards per process

    # one process, the same global batch: the same loss and the same update
    pipe = new_inverse_renderer(load_base(str(tiny_base_dir)), seed=cfg.train.seed)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    acc = Accelerator(cpu=True)
    objective = InverseObjective(pipe)
    params, opt, sched = optimiser(cfg, [pipe.unet, pipe.pass_embedding])
    objective.train()
    loss = optimiser_step(acc, objective, opt, sched, params, [collate(firsts)], cfg.train.seed, 0,
                          cfg.optim.max_grad_norm)
    assert abs(_losses(out)[1] - loss) < 1e-5 * abs(loss)
    two = load_file(str(out / "checkpoints" / "step-0000001" / "pipeline" / "unet" /
                        "diffusion_pytorch_model.safetensors"))
    one = pipe.unet.state_dict()
    d_two = torch.cat([(two[k] - before[k]).flatten() for k in before])
    d_one = torch.cat([(one[k] - before[k]).flatten() for k in before])
    assert float(d_one.norm()) > 0
    # Adam's first step is lr * sign(g) for most weights: a rounding-level difference in a gradient near
    # zero can flip a few, so the updates are compared as vectors
    assert float((d_two - d_one).norm() / d_one.norm()) < 0.02


def test_ema_checkpoints_hold_the_average_of_the_raw_weights_and_resume_exactly(shards_run, tiny_base_dir, tmp_path):
    from safetensors.torch import load_file

    from dr.models.base import load_base
    from dr.models.build import new_inverse_renderer
    from dr.train.ema import ema_rate

    common = ["inverse", "--data", str(shards_run), "--base", str(tiny_base_dir), "--preset", "tiny",
              "--set", "train.ema_decay=0.5", "--set", "train.checkpoint_every=1", "--set", "train.checkpoint_limit=9"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert train_cli(*common, "--out", str(whole), "--max-steps", "3").returncode == 0
    # the average by hand: from the initial weights, toward each step's raw weights
    init = new_inverse_renderer(load_base(str(tiny_base_dir)), seed=0).unet.state_dict()
    avg = {k: v.float().clone() for k, v in init.items()}
    for s in (1, 2, 3):
        ck = whole / "checkpoints" / f"step-{s:07d}"
        raw = load_file(str(ck / "training" / "unet.safetensors"))
        d = ema_rate(0.5, s)
        avg = {k: d * avg[k] + (1 - d) * raw[k].float() for k in avg}
        saved = load_file(str(ck / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))
        assert max(float((saved[k] - avg[k]).abs().max()) for k in avg) < 1e-6
    assert any(not torch.equal(saved[k], raw[k]) for k in raw)  # the pipeline is not the raw weights
    # stopped after step 2 and continued: the same raw weights and the same average
    assert train_cli(*common, "--out", str(part), "--max-steps", "2").returncode == 0
    assert train_cli(*common, "--out", str(part), "--max-steps", "3").returncode == 0
    for sub in ("training/unet.safetensors", "pipeline/unet/diffusion_pytorch_model.safetensors"):
        a = load_file(str(whole / "checkpoints" / "step-0000003" / sub))
        b = load_file(str(part / "checkpoints" / "step-0000003" / sub))
        assert all(torch.equal(a[k], b[k]) for k in a), sub


def test_sample_writes_the_models_result_beside_the_truth(shards_run, tiny_base_dir, tmp_path):
    from dr.assets_manifest.builtin.library import blender_world_dir
    from dr.shards.reader import iter_samples

    common = ["--data", str(shards_run), "--base", str(tiny_base_dir), "--preset", "tiny", "--max-steps", "1"]
    previews = ["--set", "train.sample_every=1", "--set", "train.sample_steps=2", "--set", "data.holdout_fraction=0.5"]
    for kind in ("inverse", "forward"):
        r = train_cli(kind, *common, "--out", str(tmp_path / kind), *(previews if kind == "forward" else []))
        assert r.returncode == 0, r.stderr
    # the forward run previewed its held-out clips at step 1, with their metrics
    from dr.train.data import is_held_out

    held = [s.key for s in iter_samples(str(shards_run), passes=(), with_env=False) if is_held_out(s.key, 0.5)]
    step1 = tmp_path / "forward" / "samples" / "step-0000001"
    got = json.loads((step1 / "metrics.json").read_text())
    assert sorted(got) == sorted(held[:2]) and all(0 < m["rgb_psnr"] < 100 for m in got.values())
    assert (step1 / "index.html").is_file() and (step1 / f"{held[0]}-forward.anim.png").is_file()
    key = next(iter_samples(str(shards_run), passes=(), with_env=False)).key
    hdri = sorted(blender_world_dir().glob("*.exr"))[0]

    r = train_cli("sample", str(tmp_path / "inverse"), key, "--out", str(tmp_path / "si"), "--steps", "2")
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "si" / f"{key}-inverse.npz")
    assert got["normal"].shape == (4, 32, 32, 3) and got["roughness"].shape == (4, 32, 32, 1)
    assert np.allclose(np.linalg.norm(got["normal"], axis=-1), 1, atol=1e-3)  # the pipeline's unit normals
    for name in (f"{key}-truth.png", f"{key}-inverse.png", f"{key}-inverse.anim.png", "index.html"):
        assert (tmp_path / "si" / name).is_file(), name

    own, other = tmp_path / "own", tmp_path / "other"
    for folder, extra in ((own, []), (other, ["--env", str(hdri)])):
        r = train_cli("sample", str(tmp_path / "forward"), key, "--out", str(folder), "--steps", "2", *extra)
        assert r.returncode == 0, r.stderr
    a, b = np.load(own / f"{key}-forward.npz"), np.load(other / f"{key}-forward.npz")
    from dr.assets_manifest.hdr_image import read_hdr

    clip = next(iter_samples(str(shards_run)))
    assert np.array_equal(a["env"], clip.env) and np.array_equal(b["env"], read_hdr(hdri))
    assert np.array_equal(a["basecolor"], b["basecolor"])  # the same G-buffers go in...
    # ...and the other env map changes what comes out (a model trained one step barely uses it yet, but
    # the CPU computes deterministically: any difference is the env's)
    assert not np.array_equal(a["rgb"], b["rgb"])

    r = train_cli("sample", str(tmp_path / "inverse"), key, "--out", str(tmp_path / "x"), "--env", str(hdri))
    assert r.returncode == 2 and "--env is for the forward renderer" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cache_latents_holds_what_the_vae_gives_and_training_reads_it(shards_run, tiny_base_dir, tmp_path):
    from safetensors import safe_open

    from dr.models.base import load_base
    from dr.models.pipelines import encode_frames
    from dr.train.data import ClipDataset
    from dr.train.latent_cache import caches_for, downsampling

    data = tmp_path / "data"
    shutil.copytree(shards_run / "shards", data / "shards")  # the cache goes beside these shards
    common = ["--data", str(data), "--base", str(tiny_base_dir), "--preset", "tiny"]
    before = tmp_path / "before"
    assert train_cli("inverse", *common, "--out", str(before), "--max-steps", "1").returncode == 0

    r = train_cli("cache-latents", *common)
    assert r.returncode == 0, r.stderr
    folder = next((data / "latents").iterdir())
    info = json.loads((folder / "cache.json").read_text())
    assert (info["height"], info["width"]) == (32, 32) and sum(map(len, info["shards"].values())) == N
    with safe_open(str(next(folder.glob("*.safetensors"))), "pt") as f:
        name = next(iter(f.keys()))
        assert f.get_tensor(name).shape == (4, 4, 16, 16)  # every frame, 32 px / 2

    # a view from the cache holds the latents the VAE gives for the pixel path's view of the same clip
    vae = load_base(str(tiny_base_dir)).vae.eval()
    _, files = caches_for([str(data)], vae, 32, 32)
    assert len(files) == 3

    def stream(**kw):
        it = iter(ClipDataset([str(data)], 3, 32, 32, (8, 16), seed=1, shuffle_buffer=2, **kw))
        return [next(it) for _ in range(4)]

    cached = stream(latents=files, latent_factor=downsampling(vae))
    pixels = stream()
    for c, p in zip(cached, pixels):
        assert c["key"] == p["key"] and torch.equal(c["env"], p["env"])
        for name in ("rgb", "normal", "depth"):
            with torch.no_grad():
                z = encode_frames(vae, p[name][None])[0]
            assert c[f"latent_{name}"].shape == z.shape
            assert float((c[f"latent_{name}"] - z).abs().max()) < 1e-2 * float(z.abs().max())  # float16

    # training reads the cache, says so and records it; a run begun without it is not switched silently
    after = tmp_path / "after"
    r = train_cli("inverse", *common, "--out", str(after), "--max-steps", "2")
    assert r.returncode == 0, r.stderr
    assert "reading the VAE latents" in r.stdout + r.stderr
    assert json.loads((after / "run.json").read_text())["identity"]["data"][0]["latents"] == folder.name
    r = train_cli("inverse", *common, "--out", str(before), "--max-steps", "2")
    assert r.returncode == 2 and "--set data.latent_cache=false" in r.stderr, r.stderr


@pytest.mark.slow
def test_env_encoder_pretraining_learns_the_forward_renderer_keeps_it_frozen_and_fine_tunes_to_one_step(
        shards_run, tiny_base_dir, tmp_path, capfd):
    from safetensors.torch import load_file

    common = ["--data", str(shards_run), "--base", str(tiny_base_dir), "--preset", "tiny"]
    env = tmp_path / "env"
    r = train_cli("env-encoder", *common, "--out", str(env), "--max-steps", "30", "--set", "optim.lr=1e-3",
                  "--set", "train.checkpoint_every=30")
    assert r.returncode == 0, r.stderr
    losses = [v for _, v in sorted(_losses(env).items())]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses  # it learns

    fwd = tmp_path / "fwd"
    r = train_cli("forward", *common, "--out", str(fwd), "--max-steps", "2", "--env-encoder", str(env))
    assert r.returncode == 0, r.stderr
    name = "env_encoder/diffusion_pytorch_model.safetensors"
    pre = load_file(str(env / "checkpoints" / "step-0000030" / "pipeline" / name))
    got = load_file(str(fwd / "checkpoints" / "step-0000002" / "pipeline" / name))
    assert sorted(pre) == sorted(got) and all(torch.equal(pre[k], got[k]) for k in pre)  # loaded, then frozen
    assert len(json.loads((fwd / "run.json").read_text())["identity"]["env_encoder"]) == 64  # its sha256

    r = train_cli("forward", *common, "--out", str(tmp_path / "bad"), "--max-steps", "1", "--env-encoder",
                  str(tmp_path / "nothing"))
    assert r.returncode == 2 and "holds no env encoder" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    # a single-step forward renderer fine-tuned from that one, its env encoder still frozen
    single = tmp_path / "single"
    r = train_cli("forward", "--data", str(shards_run), "--preset", "tiny", "--init", str(fwd), "--single-step",
                  "--set", "train.freeze_env_encoder=true", "--out", str(single), "--max-steps", "2")
    assert r.returncode == 0, r.stderr
    done = single / "checkpoints" / "step-0000002" / "pipeline"
    assert json.loads((done / "model_index.json").read_text())["single_step"] is True
    got = load_file(str(done / name))
    assert all(torch.equal(pre[k], got[k]) for k in pre)
    unet = "unet/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(fwd / "checkpoints" / "step-0000002" / "pipeline" / unet)), load_file(str(done / unet))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the UNet trained
    assert all(np.isfinite(list(_losses(single).values())))
    r = train_cli("eval", str(single), "--data", str(shards_run))
    assert r.returncode == 0, r.stderr
    report = json.loads((single / "eval.json").read_text())
    assert report["steps"] == 1 and 0 < report["model"]["rgb_psnr"] < 100
    # a clip run in windows of 2 frames sharing 1, the latent carried: the flicker is printed beside the truth's
    from dr.shards.reader import iter_samples

    key = next(iter_samples(str(shards_run), passes=(), with_env=False)).key
    r = train_cli("sample", str(single), key, "--out", str(tmp_path / "s"), "--window", "2", "--overlap", "1",
                  "--carry", "0.1")
    assert r.returncode == 0, r.stderr
    said = r.stdout + r.stderr
    assert "rgb_flicker " in said and "rgb_flicker_truth " in said, said
    for argv, message in (
            (["forward", *common, "--out", str(tmp_path / "f"), "--set", "train.freeze_env_encoder=true"],
             "random env encoder"),
            (["forward", "--data", str(shards_run), "--init", str(env), "--out", str(tmp_path / "g")],
             "not a forward or inverse renderer"),
            (["sample", str(single), key, "--out", str(tmp_path / "h"), "--window", "2", "--overlap", "2"],
             "--overlap 2 must be less than the window, 2 frames")):
        r = train_cli_here(capfd, *argv)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)


def test_cycle_trains_both_single_step_renderers_together_resumes_exactly_and_evaluates_the_cycle(
        shards_run, tiny_base_dir, tmp_path, capfd):
    from safetensors.torch import load_file

    common = ["--data", str(shards_run), "--preset", "tiny"]
    for kind in ("forward", "inverse"):
        r = train_cli(kind, *common, "--base", str(tiny_base_dir), "--single-step", "--out", str(tmp_path / kind),
                      "--max-steps", "1")
        assert r.returncode == 0, r.stderr
    pair = ["cycle", *common, "--forward", str(tmp_path / "forward"), "--inverse", str(tmp_path / "inverse"),
            "--set", "train.ema_decay=0.9", "--set", "train.checkpoint_every=1", "--set", "train.cycle_weight=0.5"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    r = train_cli(*pair, "--out", str(whole), "--max-steps", "2")
    assert r.returncode == 0, r.stderr
    for steps in ("1", "2"):  # the second resumes from the raw weights of forward/unet, inverse/unet, ...
        r = train_cli_here(capfd, *pair, "--out", str(part), "--max-steps", steps)
        assert r.returncode == 0, r.stderr
    a, b = _losses(whole), _losses(part)
    assert sorted(a) == [1, 2] and a == b and all(np.isfinite(list(a.values())))
    done = whole / "checkpoints" / "step-0000002"
    assert json.loads((done / "pipeline" / "model_index.json").read_text())["_class_name"] == "RendererPair"
    assert sorted(p.name for p in (done / "training").iterdir()) == ["forward", "inverse"]
    for kind in ("forward", "inverse"):  # both trained
        name = "unet/diffusion_pytorch_model.safetensors"
        start = load_file(str(tmp_path / kind / "checkpoints" / "step-0000001" / "pipeline" / name))
        got = load_file(str(done / "pipeline" / kind / name))
        assert any(not torch.equal(start[k], got[k]) for k in start), kind

    r = train_cli_here(capfd, "eval", str(whole), "--data", str(shards_run))
    assert r.returncode == 0, r.stderr
    rep = json.loads((whole / "eval.json").read_text())
    assert rep["kind"] == "cycle" and rep["forward"]["steps"] == rep["inverse"]["steps"] == 1
    c = rep["cycle"]
    assert 0 < c["rgb_cycle"]["rgb_psnr"] < 100 and 0 <= c["gbuffer_cycle"]["normal_angle_deg"] <= 180
    assert "forward(inverse(rgb)) against rgb" in r.stderr
    # either renderer of the pair is a checkpoint of its own; --cycle pairs two separately trained ones
    r = train_cli_here(capfd, "eval", str(done / "pipeline" / "inverse"), "--data", str(shards_run), "--cycle",
                       str(tmp_path / "forward"), "--out", str(tmp_path / "sep.json"))
    assert r.returncode == 0, r.stderr
    assert set(json.loads((tmp_path / "sep.json").read_text())["cycle"]) >= {"rgb_cycle", "gbuffer_cycle"}

    from dr.models.base import tiny_base
    from dr.models.build import new_forward_renderer

    new_forward_renderer(tiny_base(0)).save_pretrained(tmp_path / "multi")
    for argv, message in (
            (["cycle", *common, "--forward", str(tmp_path / "multi"), "--inverse", str(tmp_path / "inverse"),
              "--out", str(tmp_path / "a")], "multi-step renderer"),
            (["cycle", *common, "--forward", str(tmp_path / "inverse"), "--inverse", str(tmp_path / "inverse"),
              "--out", str(tmp_path / "b")], "is an inverse renderer"),
            (["sample", str(whole), "x", "--out", str(tmp_path / "c")], "holds both renderers"),
            (["eval", str(whole), "--data", str(shards_run), "--cycle", str(tmp_path / "forward")], "leave out --cycle")):
        r = train_cli_here(capfd, *argv)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)


def test_relight_renders_the_inverse_renderers_gbuffers_under_turned_light_and_edited_materials(
        shards_run, tiny_base_dir, tmp_path, capfd):
    import cv2

    from dr.cli.train_app import _run_config
    from dr.models.base import load_base
    from dr.models.build import new_forward_renderer, new_inverse_renderer
    from dr.models.pipelines import FORWARD_CONDITIONS, ForwardRendererPipeline, InverseRendererPipeline
    from dr.shards.reader import iter_samples
    from dr.train.data import clip_view
    from dr.train.evaluate import Centre

    base = load_base(str(tiny_base_dir))
    made = {"forward": new_forward_renderer(base, (16, 32, 32, 32), seed=0), "inverse": new_inverse_renderer(base, seed=1)}
    pipes = {}
    for kind, cls in (("forward", ForwardRendererPipeline), ("inverse", InverseRendererPipeline)):
        with torch.no_grad():  # the new channels start at zero: give the G-buffers and the env a say
            for prm in made[kind].unet.parameters():
                prm.add_(torch.randn(prm.shape, generator=torch.Generator().manual_seed(prm.numel())) * 0.02)
        pipes[kind] = cls(**made[kind].components, single_step=True)
        pipes[kind].set_progress_bar_config(disable=True)
        pipes[kind].save_pretrained(tmp_path / kind)
    clip = next(iter_samples(str(shards_run)))
    pair = ["--data", str(shards_run), "--forward", str(tmp_path / "forward"), "--inverse", str(tmp_path / "inverse"),
            "--preset", "tiny"]
    r = train_cli("relight", clip.key, *pair, "--out", str(tmp_path / "own"))
    assert r.returncode == 0, r.stderr
    own = np.load(tmp_path / "own" / f"{clip.key}-relit.npz")
    # the same by hand: the inverse renderer's latents straight into the forward renderer, the clip's own env
    d = _run_config(None, "tiny", None, None).data
    v = clip_view(clip, d.frames, d.height, d.width, Centre(), (d.env_height, d.env_width))
    g = torch.Generator().manual_seed(0)
    latents = pipes["inverse"](v["rgb"][None], generator=g, output_type="latent")
    want = pipes["forward"](None, v["env"][None], generator=g,
                            gbuffer_latents=torch.cat([latents[p] for p in FORWARD_CONDITIONS], dim=2))[0]
    assert own["rgb"].shape == (d.frames, d.height, d.width, 3) and np.allclose(own["rgb"], want, atol=1e-6)
    video = cv2.VideoCapture(str(tmp_path / "own" / f"{clip.key}-relit.mp4"))
    decoded = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        decoded.append(frame[..., ::-1] / 255.0)
    assert len(decoded) == d.frames and abs(float(np.mean(decoded)) - float(own["rgb"].mean())) < 0.02
    assert (tmp_path / "own" / "index.html").is_file()

    def relit(name, *extra):
        r = train_cli_here(capfd, "relight", clip.key, *pair, "--out", str(tmp_path / name), *extra)
        assert r.returncode == 0, r.stderr
        return np.load(tmp_path / name / f"{clip.key}-relit.npz")

    turned, full = relit("turned", "--rotate-deg", "90"), relit("full", "--rotate-deg", "360")
    assert float(np.abs(turned["rgb"] - own["rgb"]).max()) > 1e-4       # the lighting input is used
    assert float(np.abs(full["rgb"] - own["rgb"]).max()) < 1e-3         # a full turn is the same light
    edited = relit("edited", "--material", "roughness=0.1", "--material", "metallic=1")
    surface = v["mask"][:, 0].numpy() > 0.5
    assert np.all(edited["roughness"][surface] == np.float32(0.1)) and np.all(edited["metallic"][surface] == 1.0)
    assert np.array_equal(edited["basecolor"], own["basecolor"]) and not np.array_equal(edited["rgb"], own["rgb"])
    everywhere = relit("everywhere", "--material", "roughness=0.5", "--where", "all")
    assert np.all(everywhere["roughness"] == np.float32(0.5))
    for argv, message in (
            (["--material", "shininess=2"], "one of roughness, metallic"),
            (["--material", "roughness=2"], "in [0, 1]"),
            (["--where", "sky"], "surface or all")):
        r = train_cli_here(capfd, "relight", clip.key, *pair, "--out", str(tmp_path / "bad"), *argv)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)
    r = train_cli_here(capfd, "relight", clip.key, "--data", str(shards_run), "--forward", str(tmp_path / "inverse"),
                       "--inverse", str(tmp_path / "inverse"), "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "is an inverse renderer" in r.stderr
    r = train_cli_here(capfd, "relight", "nope", *pair, "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "is in none of" in r.stderr
