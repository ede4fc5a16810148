"""`dr-train`: train the forward and inverse renderers on the shards `dr-data` makes.

torch and diffusers are imported inside the commands, so `dr-train --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dr.cli.options import ConfigOpt, PresetOpt, PrintConfigOpt, SetOpt, effective_config, writable_folder
from dr.cli.runner import run
from dr.errors import UserError

app = typer.Typer(
    name="dr-train",
    help="Train DiffusionRenderer-style video diffusion models (forward: G-buffers + lighting -> video; inverse: "
         "video -> G-buffers) on the shards `dr-data` makes. Errors exit with status 2 and one line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataOpt = Annotated[list[str], typer.Option(
    "--data", help="run folder, shards folder or shard (path or fsspec URL) of `dr-data generate`; repeatable",
    show_default=False)]
OutOpt = Annotated[Path, typer.Option("--out", help="training run folder; running the same command again resumes it",
                                      show_default=False)]


def _base_opt():
    return typer.Option("--base", help="Stable Video Diffusion base: a local diffusers folder (unet/, vae/, "
                                       "scheduler/) or a hub id; `dr-train init-tiny` writes a tiny one",
                        show_default=False)


def _train(kind: str, data: list[str], base: str, out: Path, max_steps: Optional[int], preset, config, set_,
           print_config) -> None:
    sets = list(set_ or [])
    if max_steps is not None:
        if max_steps < 1:
            raise UserError(f"--max-steps {max_steps}: give a number of optimiser steps, at least 1")
        sets.append(f"train.max_steps={max_steps}")
    from dr.train.config import TrainConfig

    cfg = effective_config(TrainConfig, preset, config, sets, print_config)
    out = writable_folder(out)
    from dr.train.run_folder import check_frames, data_identity, open_run

    ident = data_identity(data)
    check_frames(ident, cfg.data.frames)
    from dr.cli.progress import console, step_progress
    from dr.models.base import check_base

    src = check_base(base)
    open_run(out, kind, cfg, src, ident, sys.argv[1:])
    console.print(f"loading the base model {src}", highlight=False, soft_wrap=True)
    from dr.models.base import load_base
    from dr.models.build import new_forward_renderer, new_inverse_renderer
    from dr.train.trainer import train

    b = load_base(src)
    pipe = new_forward_renderer(b, cfg.model.env_stem_channels, seed=cfg.train.seed) if kind == "forward" \
        else new_inverse_renderer(b, seed=cfg.train.seed)
    clips = sum(d["samples"] for d in ident)
    console.print(f"training the {kind} renderer on {clips} clips from {len(ident)} source(s) into {out}",
                  highlight=False, soft_wrap=True)
    with step_progress(kind, cfg.train.max_steps) as update:
        def on_step(r) -> None:
            update(r.step, f"loss {r.loss:.4f}  lr {r.lr:.2e}  {r.clips_per_s:.2f} clips/s")

        try:
            res = train(kind, pipe, cfg, data, out, on_step=on_step)
        except ValueError as e:  # the data cannot give what the config asks (frames, workers)
            raise UserError(str(e)) from None
    if res["resumed_from"]:
        console.print(f"  resumed from {res['resumed_from']}", highlight=False, soft_wrap=True)
    console.print(f"[bold green]trained[/] {kind} renderer to step {res['step']}: {res['checkpoint']}/pipeline\n"
                  f"  metrics {out}/logs/metrics.jsonl (TensorBoard: {out}/logs)", highlight=False, soft_wrap=True)


@app.command("forward")
def forward(data: DataOpt, base: Annotated[str, _base_opt()], out: OutOpt,
            max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="optimiser steps (train.max_steps)",
                                                             show_default=False)] = None,
            preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
            print_config: PrintConfigOpt = False) -> None:
    """Train the forward renderer: G-buffers (basecolor, normal, depth, roughness, metallic) and the env
    encodings -> the rgb video. Checkpoints in OUT/checkpoints, metrics in OUT/logs."""
    _train("forward", data, base, out, max_steps, preset, config, set_, print_config)


@app.command("inverse")
def inverse(data: DataOpt, base: Annotated[str, _base_opt()], out: OutOpt,
            max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="optimiser steps (train.max_steps)",
                                                             show_default=False)] = None,
            preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
            print_config: PrintConfigOpt = False) -> None:
    """Train the inverse renderer: rgb video -> basecolor, metallic, roughness, normal and depth (one pass
    embedding each, all five per clip in one batch). Checkpoints in OUT/checkpoints, metrics in OUT/logs."""
    _train("inverse", data, base, out, max_steps, preset, config, set_, print_config)


def _load_checkpoint(ckpt: Path):
    """(kind, pipeline, training run folder or None) of CKPT; UserError if it is none of ours."""
    import json

    from dr.train.checkpoint import resolve_pipeline

    try:
        folder, run_dir = resolve_pipeline(ckpt.expanduser().absolute())
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    cls_name = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    kinds = {"ForwardRendererPipeline": "forward", "InverseRendererPipeline": "inverse"}
    if cls_name not in kinds:
        raise UserError(f"{folder} holds a {cls_name}, not a forward or inverse renderer of dr-train")
    from dr.models.pipelines import ForwardRendererPipeline, InverseRendererPipeline

    cls = ForwardRendererPipeline if kinds[cls_name] == "forward" else InverseRendererPipeline
    pipe = cls.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return kinds[cls_name], pipe, folder, run_dir


@app.command("eval")
def eval_(
    ckpt: Annotated[Path, typer.Argument(metavar="CKPT", help="a training run (its latest checkpoint), a checkpoint "
                                                              "folder or a pipeline folder", show_default=False)],
    data: DataOpt,
    steps: Annotated[int, typer.Option("--steps", min=1, help="sampling steps per clip")] = 20,
    max_clips: Annotated[Optional[int], typer.Option("--max-clips", min=1, help="evaluate at most this many held-out "
                                                                                "clips (default: all)",
                                                     show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="where to write the report (JSON); default: "
                                                              "RUN/eval.json of the checkpoint's training run",
                                                show_default=False)] = None,
    preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """Evaluate a checkpoint on the held-out clips of --data (chosen by a hash of the clip id, never trained
    on), beside the training set's mean as a trivial baseline. Forward: rgb PSNR and SSIM (display view).
    Inverse: basecolor PSNR, normal angle, roughness and metallic RMSE, depth AbsRel after scale and shift.
    The data settings (size, frames, held-out share) are the training run's; --preset/--config/--set give
    them for a bare pipeline folder."""
    import json

    from dr.cli.progress import console
    from dr.train.config import TrainConfig
    from dr.train.run_folder import data_identity

    data_identity(data)
    kind, pipe, folder, run_dir = _load_checkpoint(ckpt)
    if run_dir is not None and not (preset or config or set_):
        cfg = TrainConfig.model_validate(json.loads((run_dir / "run.json").read_text())["config"])
    else:
        cfg = effective_config(TrainConfig, preset, config, set_, False)
    target = out or (run_dir / "eval.json" if run_dir else None)
    if target is None:
        raise UserError(f"{folder} is not inside a training run: give --out FILE for the report")
    target = target.expanduser().absolute()
    from dr.train.evaluate import evaluate

    try:
        rep = evaluate(kind, pipe, data, cfg.data, steps=steps, seed=cfg.train.seed, max_clips=max_clips)
    except ValueError as e:
        raise UserError(str(e)) from None
    rep["checkpoint"] = str(folder)
    from dr.files import write_text_atomic

    write_text_atomic(target, json.dumps(rep, indent=1, sort_keys=True) + "\n")
    console.print(f"[bold]{kind} renderer[/] on {rep['clips']} held-out clips ({steps} steps): model | baseline",
                  highlight=False, soft_wrap=True)
    for k, v in rep["model"].items():
        console.print(f"  {k:18s} {v:9.4f} | {rep['baseline'][k]:9.4f}", highlight=False, soft_wrap=True)
    for s in rep["skipped"]:
        console.print(f"  skipped {s}", highlight=False, soft_wrap=True)
    console.print(f"  report {target}", highlight=False, soft_wrap=True)


@app.command("init-tiny")
def init_tiny(
    out: Annotated[Path, typer.Option("--out", help="folder to write; the base goes to OUT/svd", show_default=False)],
    data: DataOpt,
    seed: Annotated[int, typer.Option("--seed", min=0, help="seed of the random weights and of the VAE fit")] = 0,
    vae_steps: Annotated[int, typer.Option("--vae-steps", min=0, help="optimiser steps fitting the VAE to the "
                                                                      "clips' passes (0: leave it random)")] = 1500,
    frames: Annotated[int, typer.Option("--frames", min=1, help="frames per clip the VAE is fitted on")] = 4,
    size: Annotated[int, typer.Option("--size", min=8, help="frame size the VAE is fitted at, pixels")] = 64,
) -> None:
    """Write a tiny random Stable Video Diffusion (the real classes: UNet blocks (32, 64), VAE (32, 64), SVD's
    scheduler) to OUT/svd: the base for CPUs and tests. Its VAE is fitted as an autoencoder to the passes of
    the --data clips, so decode(encode(x)) is close to x; the reconstruction PSNR per pass, on clips held out
    of the fit, is printed and saved in OUT/svd/vae_fit.json."""
    import json

    from dr.cli.progress import console, count_progress

    out = writable_folder(out)
    target = out / "svd"
    if (target / "model_index.json").exists():
        raise UserError(f"{target} already holds a base model; remove it or choose another --out")
    from dr.train.run_folder import check_frames, data_identity

    check_frames(data_identity(data), frames)
    from dr.files import write_text_atomic
    from dr.models.base import save_base, tiny_base
    from dr.shards.reader import iter_samples
    from dr.train.data import is_held_out
    from dr.train.vae_fit import fit_vae, pass_views, reconstruction_psnr

    samples = [s for src in data for s in iter_samples(src, passes=("rgb", "basecolor", "normal", "depth", "roughness",
                                                                      "metallic", "mask"), with_env=False)]
    held = [s for s in samples if is_held_out(s.key, 0.2)] or samples[-1:]
    held_keys = {s.key for s in held}
    fit = [s for s in samples if s.key not in held_keys] or samples
    base = tiny_base(seed)
    views = pass_views(fit, frames, size, seed)
    test = pass_views(held, frames, size, seed)
    before = reconstruction_psnr(base.vae, test)
    if vae_steps:
        with count_progress("fitting the VAE", vae_steps) as advance:
            fit_vae(base.vae, views, vae_steps, seed=seed, on_step=lambda *_: advance())
    after = reconstruction_psnr(base.vae, test)
    save_base(base, target)
    report = {"seed": seed, "vae_steps": vae_steps, "fit_clips": len(fit), "held_out_clips": len(held),
              "frames": frames, "size": size, "psnr_db_random": before, "psnr_db": after}
    write_text_atomic(target / "vae_fit.json", json.dumps(report, indent=1, sort_keys=True) + "\n")
    console.print(f"[bold green]wrote[/] a tiny SVD base to {target}", highlight=False, soft_wrap=True)
    console.print("  VAE reconstruction PSNR on held-out clips (dB, fitted / random): " +
                  ", ".join(f"{p} {after[p]:.1f} / {before[p]:.1f}" for p in after), highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(app, "dr-train", argv))


if __name__ == "__main__":
    main()
