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
def test_a_run_trains_checkpoints_reloads_bitwise_and_continues_exactly(kind, shards_run, tiny_base_dir, tmp_path):
    common = ["--data", str(shards_run), "--base", str(tiny_base_dir), "--preset", "tiny",
              "--set", "train.checkpoint_every=2"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    r = train_cli(kind, *common, "--out", str(whole), "--max-steps", "4")
    assert r.returncode == 0, r.stderr
    assert (whole / "checkpoints" / "latest").read_text().strip() == "step-0000004"
    assert sorted(p.name for p in (whole / "checkpoints").glob("step-*")) == ["step-0000002", "step-0000004"]
    run = json.loads((whole / "run.json").read_text())
    assert run["identity"]["kind"] == kind and len(run["sessions"]) == 1

    r = train_cli(kind, *common, "--out", str(part), "--max-steps", "2")
    assert r.returncode == 0, r.stderr
    r = train_cli(kind, *common, "--out", str(part), "--max-steps", "4")
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


def test_bad_input_is_one_line_and_exit_2(shards_run, tiny_base_dir, tmp_path):
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
    for args, message in cases:
        r = train_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    # a run of one kind is not continued by the other, nor by another config
    run = tmp_path / "inv"
    assert train_cli("inverse", *ok, "--out", str(run), "--max-steps", "1").returncode == 0
    for args, message in ((["forward", *ok], "inverse renderer"),
                          (["inverse", *ok, "--set", "optim.lr=0.1"], "config_hash")):
        r = train_cli(*args, "--out", str(run), "--max-steps", "1")
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


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
