"""`dr-train`: train the forward and inverse renderers on the shards `dr-data` makes.

torch and diffusers are imported inside the commands, so `dr-train --help` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dr.cli.options import ConfigOpt, PresetOpt, PrintConfigOpt, SetOpt, effective_config, writable_folder
from dr.cache import cache_dir
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


def _train(kind: str, data: list[str], base: Optional[str], out: Path, max_steps: Optional[int], preset, config,
           set_, print_config, env_encoder: Optional[Path] = None, init: Optional[Path] = None,
           single_step: bool = False) -> None:
    sets = list(set_ or [])
    sets += _max_steps_set(max_steps)
    if single_step:
        sets.append("train.single_step=true")
    if env_encoder is not None:
        sets.append("train.freeze_env_encoder=true")
    if (base is None) == (init is None):
        raise UserError("give the model to start from: --base (a new renderer from an SVD base) or --init "
                        "(a dr-train checkpoint of this renderer)" if base is None else
                        "give --base or --init, not both (a checkpoint brings its own VAE and scheduler)")
    if init is not None and env_encoder is not None:
        raise UserError("--init brings its own env encoder: leave out --env-encoder")
    init_folder = None
    if init is not None:
        init_kind, init_folder, _ = _find_checkpoint(init)
        _single_renderer(init_kind, init_folder, "--init")
        if init_kind != kind:
            article = "an" if init_kind == "inverse" else "a"
            raise UserError(f"--init {str(init)!r} is {article} {init_kind} renderer; this command trains the "
                            f"{kind} renderer")
    from dr.train.config import TrainConfig

    cfg = effective_config(TrainConfig, preset, config, sets, print_config)
    out = writable_folder(out)
    from dr.train.run_folder import check_frames, data_identity, open_run, precheck_run

    ident = data_identity(data)
    check_frames(ident, cfg.data.frames)
    if cfg.data.flip and kind != "inverse":
        raise UserError(f"data.flip: mirroring the {kind} renderer's clips would need mirrored env maps, which "
                        f"are not built; it is for the inverse renderer")
    if cfg.train.single_step and kind == "env-encoder":
        raise UserError("train.single_step is for the renderers, not the env encoder")
    if cfg.train.freeze_env_encoder and kind == "forward" and init is None and env_encoder is None:
        raise UserError("train.freeze_env_encoder would keep a random env encoder: give --env-encoder (a "
                        "pretrained one) or --init (a forward renderer's)")
    from dr.cli.progress import console
    from dr.models.base import check_base

    src = check_base(base) if init_folder is None else f"init:{init_folder}"
    # under `accelerate launch` / torchrun every process runs this command; the first one keeps the run
    # folder and speaks, the others train silently beside it
    main_proc = launch_rank() == 0
    precheck_run(out, kind, cfg, src, ident)
    extra, frozen = {}, None
    if env_encoder is not None:
        frozen, extra["env_encoder"] = _pretrained_env_encoder(env_encoder)
    say = console.print if main_proc else (lambda *a, **k: None)
    from dr.models.base import load_base
    from dr.models.build import new_forward_renderer, new_inverse_renderer
    from dr.train.latent_cache import caches_for

    if init_folder is not None:
        say(f"starting from the checkpoint {init_folder}", highlight=False, soft_wrap=True)
        pipe = _load_pipeline(kind, init_folder)
        b = None
    else:
        say(f"loading the base model {src}", highlight=False, soft_wrap=True)
        b = load_base(src, cache_dir=cache_dir())
    latents: dict[str, str] = {}
    pixels = cfg.train.single_step or cfg.data.flip or cfg.data.zoom > 1.0  # what the latent cache cannot give
    if cfg.data.latent_cache and kind != "env-encoder" and pixels:
        if any(caches_for(data, (b or pipe).vae, cfg.data.height, cfg.data.width)[0]):
            say("  not reading the latent cache: single-step training and data.flip / data.zoom need the pixels",
                highlight=False, soft_wrap=True)
    elif cfg.data.latent_cache and kind != "env-encoder":
        folders, latents = caches_for(data, (b or pipe).vae, cfg.data.height, cfg.data.width)
        for d, folder in zip(ident, folders):
            d["latents"] = folder and Path(folder).name
            if folder:
                say(f"  reading the VAE latents of {d['source']} from {folder}", highlight=False, soft_wrap=True)
    if main_proc:
        open_run(out, kind, cfg, src, ident, sys.argv[1:], extra)
    if init_folder is not None:
        pass  # the checkpoint loaded above is the start
    elif kind == "env-encoder":
        from dr.models.env_encoder import EnvAutoencoder

        pipe = EnvAutoencoder.new(b.unet.config.block_out_channels, cfg.model.env_stem_channels, seed=cfg.train.seed)
    elif kind == "forward":
        pipe = new_forward_renderer(b, cfg.model.env_stem_channels, seed=cfg.train.seed)
        if frozen is not None:
            def shape(cfg) -> list:
                return [list(v) if isinstance(v, (list, tuple)) else v for v in (
                    cfg.in_channels, cfg.stem_channels, cfg.block_out_channels, cfg.layers_per_block,
                    cfg.norm_num_groups)]

            if shape(frozen.config) != shape(pipe.env_encoder.config):
                raise UserError(f"--env-encoder {str(env_encoder)!r} has other widths than this base and "
                                f"model.env_stem_channels give: pretrain it with the same --base and config")
            pipe.register_modules(env_encoder=frozen.requires_grad_(False).eval())
    else:
        pipe = new_inverse_renderer(b, seed=cfg.train.seed)
    if kind in ("forward", "inverse"):  # what the checkpoints' pipelines run (their model_index.json)
        pipe.register_to_config(single_step=cfg.train.single_step, input_noise=cfg.train.input_noise)
    if kind == "forward" and cfg.train.freeze_env_encoder:
        pipe.env_encoder.requires_grad_(False).eval()
    clips = sum(d["samples"] for d in ident)
    what = "env encoder" if kind == "env-encoder" else f"{kind} renderer"
    say(f"training the {what} on {clips} clips from {len(ident)} source(s) into {out}",
        highlight=False, soft_wrap=True)
    res = _run_training(kind, pipe, cfg, data, out, latents, main_proc, say)
    say(f"[bold green]trained[/] {what} to step {res['step']}: {res['checkpoint']}/pipeline\n"
        f"  metrics {out}/logs/metrics.jsonl (TensorBoard: {out}/logs)", highlight=False, soft_wrap=True)


def _max_steps_set(max_steps: Optional[int]) -> list[str]:
    """--max-steps as a --set of train.max_steps (none when not given); UserError below 1."""
    if max_steps is None:
        return []
    if max_steps < 1:
        raise UserError(f"--max-steps {max_steps}: give a number of optimiser steps, at least 1")
    return [f"train.max_steps={max_steps}"]


def _run_training(kind: str, pipe, cfg, data: list[str], out: Path, latents: Optional[dict], main_proc: bool,
                  say) -> dict:
    """dr.train.trainer.train under a progress bar (on the first process), its ValueErrors (what the data
    cannot give) as UserErrors; says where a resumed run went on from. Returns train()'s result."""
    from dr.cli.progress import step_progress
    from dr.train.trainer import train

    with step_progress(kind, cfg.train.max_steps) if main_proc else contextlib.nullcontext(None) as update:
        def on_step(r) -> None:
            if update is not None:
                update(r.step, f"loss {r.loss:.4f}  lr {r.lr:.2e}  {r.clips_per_s:.2f} clips/s")

        try:
            res = train(kind, pipe, cfg, data, out, on_step=on_step, latents=latents)
        except ValueError as e:  # the data cannot give what the config asks (frames, workers)
            raise UserError(str(e)) from None
    if res["resumed_from"]:
        say(f"  resumed from {res['resumed_from']}", highlight=False, soft_wrap=True)
    return res


def _pretrained_env_encoder(path: Path):
    """(EnvEncoder, sha256 of its weights) from a `dr-train env-encoder` run, one of its checkpoints, or
    an env_encoder/ folder; UserError if it is none of them."""
    import hashlib

    from dr.models.env_encoder import EnvEncoder
    from dr.models.folders import latest_checkpoint

    p = path.expanduser().absolute()
    if (p / "checkpoints").is_dir():
        p = latest_checkpoint(p / "checkpoints") or p
    for cand in (p / "pipeline" / "env_encoder", p / "env_encoder", p):
        weights = cand / "diffusion_pytorch_model.safetensors"
        if (cand / "config.json").is_file() and weights.is_file():
            digest = hashlib.sha256(weights.read_bytes()).hexdigest()
            return EnvEncoder.from_pretrained(str(cand)), digest
    raise UserError(f"--env-encoder {str(path)!r} holds no env encoder: give a `dr-train env-encoder` run, "
                    f"one of its checkpoints or an env_encoder/ folder")


def launch_rank() -> int:
    """This process's global rank under `accelerate launch` or torchrun (0 when started alone)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@app.command("env-encoder")
def env_encoder_cmd(data: DataOpt, base: Annotated[str, _base_opt()], out: OutOpt,
                    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="optimiser steps "
                                                                     "(train.max_steps)", show_default=False)] = None,
                    preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
                    print_config: PrintConfigOpt = False) -> None:
    """Pretrain the forward renderer's env encoder as an autoencoder: its last feature map, decoded by
    upsampling blocks, against the env encodings (env_ldr, env_log, env_nrm at data.env_height x
    data.env_width) of --data's frames, L2. `dr-train forward --env-encoder OUT` then starts from it and
    keeps it frozen. Widths come from --base's UNet and model.env_stem_channels."""
    _train("env-encoder", data, base, out, max_steps, preset, config, set_, print_config)


InitOpt = Annotated[Optional[Path], typer.Option(
    "--init", help="start from this dr-train checkpoint (a training run, a checkpoint or a pipeline folder) "
                   "instead of --base: fine-tuning, e.g. a multi-step renderer into a single-step one",
    show_default=False)]


@app.command("forward")
def forward(data: DataOpt, out: OutOpt, base: Annotated[Optional[str], _base_opt()] = None, init: InitOpt = None,
            single_step: Annotated[bool, typer.Option(
                "--single-step", help="train a single-step renderer (train.single_step): one network evaluation "
                                      "at the largest noise level, the squared error of the decoded rgb, no "
                                      "guidance")] = False,
            max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="optimiser steps (train.max_steps)",
                                                             show_default=False)] = None,
            preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
            print_config: PrintConfigOpt = False,
            env_encoder: Annotated[Optional[Path], typer.Option(
                "--env-encoder", help="start from the env encoder `dr-train env-encoder` pretrained (its run, a "
                                      "checkpoint or an env_encoder/ folder) and keep it frozen (default: a new "
                                      "one, trained with the UNet)", show_default=False)] = None) -> None:
    """Train the forward renderer: G-buffers (basecolor, normal, depth, roughness, metallic) and the env
    encodings -> the rgb video. Checkpoints in OUT/checkpoints, metrics in OUT/logs. With --single-step
    (Ouroboros; best with --init from a multi-step one) the renderer takes one network evaluation instead
    of 20 guided sampling steps: its x0 is decoded by the frozen VAE and trained on the rgb pixels; the
    latent cache is not read. train.freeze_env_encoder=true keeps an --init renderer's env encoder fixed."""
    _train("forward", data, base, out, max_steps, preset, config, set_, print_config, env_encoder, init=init,
           single_step=single_step)


@app.command("inverse")
def inverse(data: DataOpt, out: OutOpt, base: Annotated[Optional[str], _base_opt()] = None, init: InitOpt = None,
            single_step: Annotated[bool, typer.Option(
                "--single-step", help="train a single-step renderer (train.single_step): one network evaluation "
                                      "at the largest noise level, losses on the decoded passes")] = False,
            max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="optimiser steps (train.max_steps)",
                                                             show_default=False)] = None,
            preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
            print_config: PrintConfigOpt = False) -> None:
    """Train the inverse renderer: rgb video -> basecolor, metallic, roughness, normal and depth (one pass
    embedding each, all five per clip in one batch). Checkpoints in OUT/checkpoints, metrics in OUT/logs.
    With --single-step (Ouroboros) the renderer takes one network evaluation instead of 20 sampling steps:
    its x0 is decoded by the frozen VAE and trained on the pixels (normal angle, scale-and-shift invariant
    depth, squared error of the others); the latent cache is not read."""
    _train("inverse", data, base, out, max_steps, preset, config, set_, print_config, init=init,
           single_step=single_step)


def _renderer_pair(forward_ckpt: Path, inverse_ckpt: Path, single_step: bool) -> tuple[dict[str, Path], Path | None]:
    """({'forward': pipeline folder, 'inverse': ...}, the forward renderer's training run or None) of --forward
    and --inverse; UserError unless each is a renderer of its kind (single-step ones if ``single_step``) and
    both have the same VAE (they hand latents to each other)."""
    folders, fwd_run = {}, None
    for want, ckpt in (("forward", forward_ckpt), ("inverse", inverse_ckpt)):
        kind, folders[want], run_dir = _find_checkpoint(ckpt)
        _single_renderer(kind, folders[want], f"--{want}")
        if kind != want:
            raise UserError(f"--{want} {str(ckpt)!r} is {'an' if kind == 'inverse' else 'a'} {kind} renderer")
        if want == "forward":
            fwd_run = run_dir
        if single_step and not json.loads((folders[want] / "model_index.json").read_text()).get("single_step"):
            raise UserError(f"--{want} {str(ckpt)!r} is a multi-step renderer: fine-tune it first with "
                            f"`dr-train {want} --single-step --init {ckpt}`")
    vaes = [(folders[k] / "vae" / "diffusion_pytorch_model.safetensors") for k in ("forward", "inverse")]
    if not all(v.is_file() for v in vaes) or vaes[0].read_bytes() != vaes[1].read_bytes():
        raise UserError("--forward and --inverse have different VAEs: they hand latents to each other, so train "
                        "both from the same --base")
    return folders, fwd_run


def _read_env(env: Optional[Path]):
    """The HDRI --env names (H, W, 3 linear float32), or None; UserError if it cannot be read."""
    if env is None:
        return None
    from dr.assets_manifest.hdr_image import ImageDecodeError, read_hdr

    try:
        return read_hdr(env)
    except (ImageDecodeError, OSError) as e:
        raise UserError(f"--env {str(env)!r}: {e}") from None


def _find_clip(sources: list[str], clip: str):
    from dr.train.sample import find_clip

    try:
        return find_clip(sources, clip)
    except KeyError:
        raise UserError(f"clip {clip!r} is in none of {', '.join(sources)}") from None


@app.command("cycle")
def cycle(data: DataOpt, out: OutOpt,
          forward_ckpt: Annotated[Path, typer.Option(
              "--forward", help="the single-step forward renderer to start from (a training run, a checkpoint or "
                                "a pipeline folder; `dr-train forward --single-step` makes one)", show_default=False)],
          inverse_ckpt: Annotated[Path, typer.Option(
              "--inverse", help="the single-step inverse renderer to start from (`dr-train inverse --single-step`), "
                                "on the same base (one VAE)", show_default=False)],
          max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="optimiser steps (train.max_steps)",
                                                           show_default=False)] = None,
          preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
          print_config: PrintConfigOpt = False) -> None:
    """Fine-tune a single-step forward and inverse renderer together (Ouroboros' cycle consistency): the
    two task losses plus the cycles forward(inverse(I)) against the rgb I and inverse(forward(G)) against
    the G-buffers G (train.cycle_weight), in pixel space after the frozen VAE decoder; the latents pass
    from one renderer to the other directly. Both UNets, the pass embedding and the env encoder (unless
    train.freeze_env_encoder) train. Checkpoints hold pipeline/forward and pipeline/inverse, each a
    renderer every command takes; `dr-train eval OUT` measures both and the cycle."""
    sets = list(set_ or [])
    sets += _max_steps_set(max_steps)
    folders, _ = _renderer_pair(forward_ckpt, inverse_ckpt, single_step=True)
    from dr.train.config import TrainConfig

    cfg = effective_config(TrainConfig, preset, config, sets + ["train.single_step=true"], print_config)
    out = writable_folder(out)
    from dr.train.run_folder import check_frames, data_identity, open_run, precheck_run

    ident = data_identity(data)
    check_frames(ident, cfg.data.frames)
    if cfg.data.flip:
        raise UserError("data.flip: the forward renderer's env map would have to be mirrored too; leave it off")
    src = f"cycle:{folders['forward']}|{folders['inverse']}"
    main_proc = launch_rank() == 0
    precheck_run(out, "cycle", cfg, src, ident)
    from dr.cli.progress import console
    from dr.models.pipelines import RendererPair

    say = console.print if main_proc else (lambda *a, **k: None)
    say(f"starting from {folders['forward']} and {folders['inverse']}", highlight=False, soft_wrap=True)
    pair = RendererPair(_load_pipeline("forward", folders["forward"]), _load_pipeline("inverse", folders["inverse"]))
    if cfg.train.freeze_env_encoder:
        pair.forward.env_encoder.requires_grad_(False).eval()
    if main_proc:
        open_run(out, "cycle", cfg, src, ident, sys.argv[1:])
    clips = sum(d["samples"] for d in ident)
    say(f"training the forward and inverse renderers together on {clips} clips from {len(ident)} source(s) "
        f"into {out}", highlight=False, soft_wrap=True)
    res = _run_training("cycle", pair, cfg, data, out, None, main_proc, say)
    say(f"[bold green]trained[/] both renderers to step {res['step']}: {res['checkpoint']}/pipeline/forward and "
        f"/inverse\n  metrics {out}/logs/metrics.jsonl (TensorBoard: {out}/logs)", highlight=False, soft_wrap=True)


def _find_checkpoint(ckpt: Path) -> tuple[str, Path, Path | None]:
    """(kind, pipeline folder, training run folder or None) of CKPT; UserError if it is none of ours.
    Loads nothing."""
    from dr.models.folders import resolve_pipeline

    try:
        folder, run_dir = resolve_pipeline(ckpt.expanduser().absolute())
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    cls_name = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    kinds = {"ForwardRendererPipeline": "forward", "InverseRendererPipeline": "inverse", "RendererPair": "cycle"}
    if cls_name not in kinds:
        raise UserError(f"{folder} holds a {cls_name}, not a forward or inverse renderer of dr-train")
    return kinds[cls_name], folder, run_dir


def _single_renderer(kind: str, folder: Path, option: str) -> None:
    """UserError if ``folder`` is a cycle run's pair where one renderer is wanted."""
    if kind == "cycle":
        raise UserError(f"{option} {folder} holds both renderers of a `dr-train cycle` run: give "
                        f"{folder / 'forward'} or {folder / 'inverse'}")


def _load_pipeline(kind: str, folder: Path):
    from dr.models.pipelines import load_renderer

    return load_renderer(kind, folder)


def _run_config(run_dir: Path | None, preset, config, set_):
    """The TrainConfig of a checkpoint's training run, or the one --preset/--config/--set give."""
    from pydantic import ValidationError

    from dr.train.config import TrainConfig

    if run_dir is None or preset or config or set_:
        return effective_config(TrainConfig, preset, config, set_, False)
    try:
        return TrainConfig.model_validate(json.loads((run_dir / "run.json").read_text())["config"])
    except (ValidationError, KeyError, json.JSONDecodeError):
        raise UserError(f"{run_dir}/run.json holds a config this dr version cannot read: give the data settings "
                        f"with --preset/--config/--set") from None


def _steps(pipe, steps: Optional[int]) -> int:
    """--steps, or the renderer's own count; UserError for a count a single-step renderer cannot run."""
    try:
        return pipe.steps(steps)
    except ValueError as e:
        raise UserError(f"--steps {steps}: {e}") from None


@app.command("eval")
def eval_(
    ckpt: Annotated[Path, typer.Argument(metavar="CKPT", help="a training run (its latest checkpoint), a checkpoint "
                                                              "folder or a pipeline folder", show_default=False)],
    data: DataOpt,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="sampling steps per clip (default: the "
                                                                         "renderer's, 20, or 1 for a single-step one)",
                                                 show_default=False)] = None,
    max_clips: Annotated[Optional[int], typer.Option("--max-clips", min=1, help="evaluate at most this many held-out "
                                                                                "clips (default: all)",
                                                     show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="where to write the report (JSON); default: "
                                                              "RUN/eval.json of the checkpoint's training run",
                                                show_default=False)] = None,
    cycle: Annotated[Optional[Path], typer.Option(
        "--cycle", help="a renderer of the other kind (a training run, a checkpoint or a pipeline folder): evaluate "
                        "it too, and the cycle of the two (a `dr-train cycle` run is measured so by itself)",
        show_default=False)] = None,
    preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """Evaluate a checkpoint on the held-out clips of --data (chosen by a hash of the clip id, never trained
    on), beside the training set's mean as a trivial baseline. Forward: rgb PSNR and SSIM (display view).
    Inverse: basecolor PSNR, normal angle, roughness and metallic RMSE, depth AbsRel after scale and shift.
    With both renderers (a `dr-train cycle` run, or --cycle) also the cycle: the forward metrics of
    forward(inverse(rgb)) against the rgb, the inverse metrics of inverse(forward(G-buffers)) against them.
    The data settings (size, frames, held-out share) are the training run's; --preset/--config/--set give
    them for a bare pipeline folder."""
    from dr.cli.progress import console
    from dr.train.run_folder import data_identity

    data_identity(data)
    kind, folder, run_dir = _find_checkpoint(ckpt)
    folders = {"forward": folder / "forward", "inverse": folder / "inverse"} if kind == "cycle" else {kind: folder}
    if cycle is not None:
        if kind == "cycle":
            raise UserError(f"{folder} holds both renderers of a cycle run: leave out --cycle")
        other = "inverse" if kind == "forward" else "forward"
        other_kind, other_folder, _ = _find_checkpoint(cycle)
        if other_kind != other:
            raise UserError(f"--cycle {str(cycle)!r}: give the {other} renderer to go with this {kind} one")
        folders[other] = other_folder
    cfg = _run_config(run_dir, preset, config, set_)
    target = out or (run_dir / "eval.json" if run_dir else None)
    if target is None:
        raise UserError(f"{folder} is not inside a training run: give --out FILE for the report")
    target = target.expanduser().absolute()
    from dr.train.evaluate import evaluate, evaluate_cycle

    pipes = {k: _load_pipeline(k, f) for k, f in sorted(folders.items())}
    reports = {}
    try:
        for k, pipe in pipes.items():
            reports[k] = evaluate(k, pipe, data, cfg.data, steps=_steps(pipe, steps), seed=cfg.train.seed,
                                  max_clips=max_clips)
            reports[k]["checkpoint"] = str(folders[k])
        if len(pipes) == 2:
            reports["cycle"] = evaluate_cycle(pipes["forward"], pipes["inverse"], data, cfg.data, seed=cfg.train.seed,
                                              max_clips=max_clips)
    except ValueError as e:
        raise UserError(str(e)) from None
    rep = reports[kind] if len(pipes) == 1 else {"kind": "cycle", **reports, "checkpoint": str(folder)}
    from dr.files import write_text_atomic

    write_text_atomic(target, json.dumps(rep, indent=1, sort_keys=True) + "\n")
    for k in ("forward", "inverse"):
        r = reports.get(k)
        if r is None:
            continue
        console.print(f"[bold]{k} renderer[/] on {r['clips']} held-out clips ({r['steps']} steps, "
                      f"{r['seconds_per_clip']:.2f} s a clip): model | baseline", highlight=False, soft_wrap=True)
        for m, v in r["model"].items():
            console.print(f"  {m:18s} {v:9.4f} | {r['baseline'][m]:9.4f}", highlight=False, soft_wrap=True)
        for s in r["skipped"]:
            console.print(f"  skipped {s}", highlight=False, soft_wrap=True)
    if "cycle" in reports:
        c = reports["cycle"]
        console.print(f"[bold]cycle[/] on {c['clips']} held-out clips", highlight=False, soft_wrap=True)
        for part, what in (("rgb_cycle", "forward(inverse(rgb)) against rgb"),
                           ("gbuffer_cycle", "inverse(forward(G-buffers)) against them")):
            console.print(f"  {what}: " + ", ".join(f"{m} {v:.4f}" for m, v in c[part].items()),
                          highlight=False, soft_wrap=True)
    console.print(f"  report {target}", highlight=False, soft_wrap=True)


@app.command("sample")
def sample(
    ckpt: Annotated[Path, typer.Argument(metavar="CKPT", help="a training run (its latest checkpoint), a checkpoint "
                                                              "folder or a pipeline folder", show_default=False)],
    clip: Annotated[str, typer.Argument(metavar="CLIP", help="clip id (as in the shards' index.json)",
                                        show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="folder to write: OUT/<clip>-truth and OUT/<clip>-<kind> "
                                                    "previews (.png, .anim.png), OUT/<clip>-<kind>.npz (the "
                                                    "passes; forward: and the env map used), OUT/index.html",
                                      show_default=False)],
    data: Annotated[Optional[list[str]], typer.Option(
        "--data", help="where to find CLIP; repeatable (default: the data of the checkpoint's training run)",
        show_default=False)] = None,
    env: Annotated[Optional[Path], typer.Option(
        "--env", help="forward renderer: render under this HDRI (.exr or .hdr, equirectangular) instead of the "
                      "clip's own, turned with the clip's cameras", show_default=False)] = None,
    frames: Annotated[Optional[int], typer.Option(
        "--frames", min=1, help="frames to run, the middle ones of the clip (default: the training run's "
                                "data.frames)",
        show_default=False)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="sampling steps (default: the renderer's, "
                                                                         "20, or 1 for a single-step one)",
                                                 show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="seed of the initial noise")] = 0,
    window: Annotated[Optional[int], typer.Option(
        "--window", min=1, help="frames per window when --frames exceeds it (default: the model's frames, "
                                "unet/config.json num_frames)", show_default=False)] = None,
    overlap: Annotated[int, typer.Option("--overlap", min=0, help="frames shared by consecutive windows, blended "
                                                                  "linearly")] = 6,
    carry: Annotated[float, typer.Option(
        "--carry", min=0.0, max=1.0, help="gamma of the carried latent: each window starts, on the frames it "
                                          "shares with the one before, from gamma x that window's result + "
                                          "(1 - gamma) x noise (Ouroboros: 0.1; 0: independent windows)")] = 0.0,
    preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """Run a checkpoint on one clip at the training size: the forward renderer renders its G-buffers under
    its env map (or --env), the inverse renderer decomposes its rgb. Clips longer than the model's frames
    run in overlapping windows (--window, --overlap, --carry). Writes previews like `dr-data preview`, the
    truth beside the model's result, the result's passes in DESIGN's units as an .npz, and prints dr-train
    eval's metrics for the clip and the flicker of each pass (mean absolute change between consecutive
    frames) beside the truth's."""
    import numpy as np

    from dr.cli.progress import console
    from dr.train.run_folder import data_identity

    kind, folder, run_dir = _find_checkpoint(ckpt)
    _single_renderer(kind, folder, "CKPT")
    run = json.loads((run_dir / "run.json").read_text()) if run_dir is not None else None
    cfg = _run_config(run_dir, preset, config, set_)
    sources = list(data or ([d["source"] for d in run["data"]] if run else []))
    if not sources:
        raise UserError(f"{folder} is not inside a training run: give --data RUN where clip {clip!r} is")
    data_identity(sources)
    if env is not None and kind != "forward":
        raise UserError("--env is for the forward renderer; this checkpoint is an inverse renderer")
    hdri = _read_env(env)
    n = frames or cfg.data.frames
    out = writable_folder(out)
    from dr.shards.preview import INDEX_NAME, write_previews
    from dr.train.sample import sample_clip

    found = _find_clip(sources, clip)
    pipe = _load_pipeline(kind, folder)
    steps = _steps(pipe, steps)
    w = window or pipe.num_frames
    if n > w and overlap >= w:
        raise UserError(f"--overlap {overlap} must be less than the window, {w} frames")
    console.print(f"running the {kind} renderer on {clip} ({n} frames, {steps} steps)", highlight=False,
                  soft_wrap=True)
    try:
        true, made, metrics = sample_clip(kind, pipe, found, cfg.data, n, steps=steps, seed=seed, env=hdri,
                                          window=window, overlap=overlap, carry=carry)
    except ValueError as e:
        raise UserError(str(e)) from None
    import io

    from dr.files import write_bytes_atomic

    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **made.passes, **({"env": made.env} if made.env is not None and kind == "forward" else {}))
    write_bytes_atomic(out / f"{made.key}.npz", buf.getvalue())
    write_previews([true, made], out, frames=min(n, 6), title=f"dr-train sample {folder} {clip}")
    if hdri is not None:  # under another env map there is no path-traced truth to compare with
        metrics = {k: v for k, v in metrics.items() if k.endswith("_flicker")}
    console.print("  " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), highlight=False, soft_wrap=True)
    console.print(f"[bold green]sampled[/] {clip}: {out / (made.key + '.npz')}\n  open {out / INDEX_NAME}",
                  highlight=False, soft_wrap=True)


@app.command("relight")
def relight_cmd(
    clip: Annotated[str, typer.Argument(metavar="CLIP", help="clip id (as in the shards' index.json) of --data",
                                        show_default=False)],
    data: DataOpt,
    forward_ckpt: Annotated[Path, typer.Option("--forward", help="the forward renderer (a training run, a checkpoint "
                                                                 "or a pipeline folder)", show_default=False)],
    inverse_ckpt: Annotated[Path, typer.Option("--inverse", help="the inverse renderer, on the same base (one VAE)",
                                               show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="folder to write: OUT/<clip>-relit.mp4, OUT/<clip>-relit.npz "
                                                    "(rgb and the G-buffers rendered, DESIGN's units), previews "
                                                    "(.png, .anim.png) beside the truth, OUT/index.html",
                                      show_default=False)],
    env: Annotated[Optional[Path], typer.Option(
        "--env", help="the new lighting: an HDRI (.exr or .hdr, equirectangular, Z up) in the clip's world frame "
                      "(default: the clip's own env map)", show_default=False)] = None,
    rotate_deg: Annotated[float, typer.Option("--rotate-deg", help="turn the lighting about the env's up axis "
                                                                   "(+Z), degrees counter-clockwise seen from "
                                                                   "above")] = 0.0,
    material: Annotated[Optional[list[str]], typer.Option(
        "--material", help="set a material before rendering: roughness=V or metallic=V, V in [0, 1]; repeatable",
        show_default=False)] = None,
    where: Annotated[str, typer.Option("--where", help="where --material applies: surface (the clip's surface "
                                                       "pixels) or all")] = "surface",
    frames: Annotated[Optional[int], typer.Option("--frames", min=1, help="frames to run, the middle ones (default: "
                                                                          "the forward renderer's training "
                                                                          "data.frames)", show_default=False)] = None,
    fps: Annotated[float, typer.Option("--fps", min=1.0, help="frame rate of the mp4")] = 12.0,
    seed: Annotated[int, typer.Option("--seed", min=0, help="seed of the renderers' input noise")] = 0,
    preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """Relight a clip and edit its materials (DiffusionRenderer's editing applications): the inverse renderer
    decomposes its rgb, the lighting is swapped (--env, --rotate-deg), --material sets roughness or metallic,
    and the forward renderer renders the result. Writes an mp4, the result's passes and previews beside the
    path-traced truth, and prints rgb PSNR and SSIM against the clip's own path-traced rgb (with its own
    lighting and materials a measure of the pair; under other lighting, how far the relit clip moved)."""
    from dr.train.relight import parse_materials

    try:
        mats = parse_materials(material)
    except ValueError as e:
        raise UserError(str(e)) from None
    if where not in ("surface", "all"):
        raise UserError(f"--where {where!r}: surface or all")
    folders, fwd_run = _renderer_pair(forward_ckpt, inverse_ckpt, single_step=False)
    cfg = _run_config(fwd_run, preset, config, set_)
    from dr.train.run_folder import data_identity

    data_identity(data)
    hdri = _read_env(env)
    n = frames or cfg.data.frames
    out = writable_folder(out)
    from dr.cli.progress import console
    from dr.train.relight import relight, write_mp4

    found = _find_clip(data, clip)
    fwd, inv = _load_pipeline("forward", folders["forward"]), _load_pipeline("inverse", folders["inverse"])
    console.print(f"relighting {clip} ({n} frames)" + (f" under {env}" if env else "") +
                  (f", the light turned {rotate_deg:g} degrees" if rotate_deg else "") +
                  "".join(f", {k} = {v:g}" for k, v in mats.items()), highlight=False, soft_wrap=True)
    try:
        res = relight(fwd, inv, found, cfg.data, n, env=hdri, rotate_deg=rotate_deg, materials=mats, where=where,
                      seed=seed)
    except ValueError as e:
        raise UserError(str(e)) from None
    import io

    import numpy as np

    from dr.files import write_bytes_atomic
    from dr.shards.preview import INDEX_NAME, write_previews
    from dr.train.relight import preview_samples

    out.mkdir(parents=True, exist_ok=True)
    key = f"{clip}-relit"
    write_mp4(out / f"{key}.mp4", res.rgb, fps)
    buf = io.BytesIO()
    np.savez_compressed(buf, rgb=res.rgb, **res.passes)
    write_bytes_atomic(out / f"{key}.npz", buf.getvalue())
    write_previews(preview_samples(res, found, key, n, hdri), out, frames=min(n, 6), title=f"dr-train relight {clip}")
    console.print("  against the clip's own path-traced rgb: " + ", ".join(f"{k} {v:.4f}" for k, v in res.metrics.items()),
                  highlight=False, soft_wrap=True)
    console.print(f"[bold green]relit[/] {clip}: {out / (key + '.mp4')}\n  open {out / INDEX_NAME}",
                  highlight=False, soft_wrap=True)


@app.command("cache-latents")
def cache_latents(data: DataOpt, base: Annotated[str, _base_opt()], preset: PresetOpt = None,
                  config: ConfigOpt = None, set_: SetOpt = None, print_config: PrintConfigOpt = False) -> None:
    """Encode every pass of every clip of --data through the base's VAE once, at the training size of the
    config (data.height x data.width), into RUN/latents/<vae>-<H>x<W>/ beside the shards (safetensors, one
    file per shard). `dr-train forward|inverse` with the same base and size then read the latents instead of
    encoding six passes per clip at every step. Running it again continues where it stopped."""
    from dr.train.config import TrainConfig

    cfg = effective_config(TrainConfig, preset, config, set_, print_config)
    from dr.train.run_folder import data_identity

    ident = data_identity(data)
    from dr.models.base import check_base

    src = check_base(base)
    from dr.cli.progress import console, count_progress
    from dr.models.base import load_base
    from dr.train.latent_cache import write_cache

    vae = load_base(src, cache_dir=cache_dir()).vae.eval()
    clips = sum(d["samples"] for d in ident)
    with count_progress("encoding latents", clips) as advance:
        try:
            folders = write_cache(data, vae, cfg.data.height, cfg.data.width, on_clip=advance)
        except ValueError as e:
            raise UserError(str(e)) from None
    for f in folders:
        console.print(f"[bold green]cached[/] the latents of {clips} clips at {cfg.data.height}x{cfg.data.width} "
                      f"in {f}", highlight=False, soft_wrap=True)


@app.command("init-tiny")
def init_tiny(
    out: Annotated[Path, typer.Option("--out", help="folder to write; the base goes to OUT/svd, DiffusionLight's "
                                                    "tiny models to OUT/diffusionlight", show_default=False)],
    data: DataOpt,
    seed: Annotated[int, typer.Option("--seed", min=0, help="seed of the random weights and of the VAE fit")] = 0,
    vae_steps: Annotated[int, typer.Option("--vae-steps", min=0, help="optimiser steps fitting the VAE to the "
                                                                      "clips' passes (0: leave it random)")] = 1500,
    frames: Annotated[int, typer.Option("--frames", min=1, help="frames per clip the VAE is fitted on")] = 4,
    size: Annotated[int, typer.Option("--size", min=8, help="frame size the VAE is fitted at, pixels (the "
                                                             "cpu-demo and tiny training size)")] = 32,
) -> None:
    """Write a tiny random Stable Video Diffusion (the real classes: UNet blocks (32, 64), VAE (32, 64), SVD's
    scheduler) to OUT/svd: the base for CPUs and tests; and tiny random DiffusionLight models of the real classes
    to OUT/diffusionlight (the --light of `dr-data autolabel` on CPUs and in tests). Its VAE is fitted as an autoencoder to the passes of
    the --data clips, so decode(encode(x)) is close to x; the reconstruction PSNR per pass, on clips held out
    of the fit, is printed and saved in OUT/svd/vae_fit.json."""
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
    light = out / "diffusionlight"
    if not (light / "sdxl" / "model_index.json").exists():
        from dr.models.light import save_tiny_light

        save_tiny_light(light, seed)
        console.print(f"[bold green]wrote[/] tiny random DiffusionLight models (SDXL, depth ControlNet, DPT, exposure and "
                      f"Turbo LoRAs) to {light}: `dr-data autolabel --light {light}`", highlight=False, soft_wrap=True)
    console.print("  VAE reconstruction PSNR on held-out clips (dB, fitted / random): " +
                  ", ".join(f"{p} {after[p]:.1f} / {before[p]:.1f}" for p in after), highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(app, "dr-train", argv))


if __name__ == "__main__":
    main()
