from __future__ import annotations

import subprocess
import sys

import pytest

from dr.config import PRESETS, CommandConfig, config_hash, config_yaml, resolve_config
from dr.errors import UserError
from dr.render.settings import RenderSettings
from dr.scenes.config import SceneConfig, ScenesSampleConfig
from dr.pipeline.autolabel_config import ClipSettings, LightSettings
from dr.train.config import DataSection, ModelSection, OptimSection, TrainSection


class Everything(CommandConfig):
    """A command with every section a preset may set."""

    scene: SceneConfig = SceneConfig()
    render: RenderSettings = RenderSettings()
    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    optim: OptimSection = OptimSection()
    train: TrainSection = TrainSection()
    clips: ClipSettings = ClipSettings()
    light: LightSettings = LightSettings()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_for_every_section(name):
    cfg = resolve_config(Everything, preset=name)
    assert cfg.preset == name
    for section, values in PRESETS[name].items():
        for key, value in values.items():
            assert getattr(getattr(cfg, section), key) == value


def test_presets_are_what_the_readme_promises():
    paper = resolve_config(Everything, preset="paper")
    assert (paper.scene.width, paper.scene.height, paper.scene.frames) == (512, 512, 24)
    tiny = resolve_config(Everything, preset="tiny")
    assert (tiny.scene.width, tiny.scene.height, tiny.scene.frames) == (64, 64, 4)
    assert tiny.render.samples <= 8
    demo = resolve_config(Everything, preset="cpu-demo")
    pixels = lambda c: c.scene.width * c.scene.height * c.scene.frames * c.render.samples  # noqa: E731
    assert pixels(tiny) < pixels(demo) < pixels(paper) / 50
    assert resolve_config(Everything) == paper  # paper is the default


def test_precedence_defaults_preset_file_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: tiny\nscene:\n  frames: 6\n  camera:\n    fov_deg: [30, 35]\n")
    cfg = resolve_config(ScenesSampleConfig, config_file=f, sets=["scene.frames=9"])
    assert cfg.preset == "tiny"
    assert cfg.scene.width == 64  # from the preset named in the file
    assert cfg.scene.frames == 9  # --set beats the file
    assert cfg.scene.camera.fov_deg == (30.0, 35.0)  # the file beats the default
    assert cfg.scene.camera.elevation_deg == SceneConfig().camera.elevation_deg
    # --preset on the command line beats the file's preset
    assert resolve_config(ScenesSampleConfig, preset="paper", config_file=f).scene.width == 512


def test_set_values_are_yaml():
    cfg = resolve_config(ScenesSampleConfig, sets=["scene.objects.asset_size_m=[0.2, 0.4]", "scene.fps=12.5",
                                                   "scene.light.p_rotate=0"])
    assert cfg.scene.objects.asset_size_m == (0.2, 0.4)
    assert cfg.scene.fps == 12.5
    assert cfg.scene.light.p_rotate == 0.0


@pytest.mark.parametrize("sets, message", [
    (["scene.frames"], "malformed --set"),
    (["=3"], "malformed --set"),
    (["scene.frames="], "malformed --set"),
    (["scene..frames=3"], "malformed --set"),
    (["scene.nope=3"], "unknown key scene.nope"),
    (["scene.frames.x=3"], "is not a config section"),
    (["scene.frames=-1"], "scene.frames"),
    (["scene.camera.fov_deg=[60, 40]"], "lo > hi"),
    (["scene.frames=[unclosed"], "not valid YAML"),
])
def test_bad_overrides_are_one_line_user_errors(sets, message):
    with pytest.raises(UserError) as e:
        resolve_config(ScenesSampleConfig, sets=sets)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_files_and_presets(tmp_path):
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        resolve_config(ScenesSampleConfig, preset="huge")
    with pytest.raises(UserError, match="does not exist"):
        resolve_config(ScenesSampleConfig, config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("scene: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        resolve_config(ScenesSampleConfig, config_file=bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("scenes:\n  frames: 3\n")
    with pytest.raises(UserError, match="scenes: unknown key"):
        resolve_config(ScenesSampleConfig, config_file=unknown)


def test_hash_identifies_values_not_labels():
    a = resolve_config(ScenesSampleConfig, preset="tiny")
    b = resolve_config(ScenesSampleConfig, preset="paper", sets=["scene.width=64", "scene.height=64", "scene.frames=4"])
    assert a.preset != b.preset and config_hash(a) == config_hash(b)
    c = resolve_config(ScenesSampleConfig, preset="tiny", sets=["scene.light.strength=[0.5, 1.6]"])
    assert config_hash(c) != config_hash(a)
    assert config_yaml(a).endswith(f"# config hash: {config_hash(a)}\n")


def test_hash_is_the_same_in_another_process():
    code = ("from dr.config import resolve_config, config_hash; from dr.scenes.config import ScenesSampleConfig; "
            "print(config_hash(resolve_config(ScenesSampleConfig, preset='cpu-demo')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip()
    assert out == config_hash(resolve_config(ScenesSampleConfig, preset="cpu-demo"))


def test_yaml_round_trip(tmp_path):
    cfg = resolve_config(ScenesSampleConfig, preset="cpu-demo", sets=["scene.objects.gap_m=0.05"])
    f = tmp_path / "effective.yaml"
    f.write_text(config_yaml(cfg))
    assert resolve_config(ScenesSampleConfig, config_file=f) == cfg
