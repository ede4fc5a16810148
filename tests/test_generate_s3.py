"""A run written to s3:// (a local S3 endpoint, moto's server): every file the run publishes goes
through fsspec, the render workers stage in the cache folder, and the result reads back as shards."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile

import pytest

from conftest import run_cli

BUCKET = "dr-test-runs"


@pytest.fixture(scope="module")
def s3_env():
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    ray_tmp = tempfile.mkdtemp(prefix="drray-", dir="/tmp")
    yield {**env, "DR_RAY_TEMP_DIR": ray_tmp}
    server.stop()
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _fs(env):
    import s3fs

    return s3fs.S3FileSystem(key="test", secret="test", endpoint_url=env["AWS_ENDPOINT_URL"])


def test_a_run_on_s3_makes_valid_shards_and_resumes(s3_env, monkeypatch):
    url = f"s3://{BUCKET}/runs/tiny"
    r = run_cli("generate", "--n", "3", "--out", url, "--preset", "tiny", "--clips-per-shard", "2", env=s3_env)
    assert r.returncode == 0, r.stderr
    fs = _fs(s3_env)
    names = {p.rsplit("/", 1)[-1] for p in fs.find(f"{BUCKET}/runs/tiny")}
    assert {"run.json", "plan", "manifest.jsonl", "stats.json", "index.json", "shard-000000.tar", "shard-000001.tar",
            "s0_00000000.done.json", "s0_00000000.a0.t0.log"} <= names
    assert not fs.find(f"{BUCKET}/runs/tiny/clips"), "clips are removed once in a shard"
    assert not [n for n in names if ".tmp-" in n or n.endswith(".partial")]

    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    from dr.shards.reader import iter_samples
    from dr.shards.validate import validate_source

    keys = [s.key for s in iter_samples(url, passes=["mask"], with_env=False)]
    assert keys == ["s0_00000000", "s0_00000001", "s0_00000002"]
    assert validate_source(url).ok
    status = json.loads(run_cli("status", url, "--json", env=s3_env).stdout)
    assert status["complete"] and status["done"] == 3 and status["shards_written"] == 2

    r = run_cli("generate", "--n", "3", "--out", url, "--preset", "tiny", "--clips-per-shard", "2", env=s3_env)
    assert r.returncode == 0 and "nothing to do" in r.stderr
    r = run_cli("generate", "--n", "3", "--out", url, "--preset", "cpu-demo", "--clips-per-shard", "2", env=s3_env)
    assert r.returncode == 2 and "different settings" in r.stderr
