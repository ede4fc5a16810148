"""The plan of a run: clip index -> clip id, seed, shard. Fixed before any work starts.

The file ``plan`` is JSON lines: a header (n, seed, clips_per_shard, identity hash) and one row
per clip. Shard s holds clips [s K, (s + 1) K), so which shard a clip lands in never depends on
the order clips finish in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from dr.pipeline.run_store import RunStore
from dr.scenes.sampler import clip_id

PLAN_NAME = "plan"


@dataclass(frozen=True)
class Plan:
    n: int
    seed: int
    clips_per_shard: int
    identity_hash: str

    @property
    def shards(self) -> int:
        return -(-self.n // self.clips_per_shard)

    def key(self, index: int) -> str:
        return clip_id(self.seed, index)

    def shard_of(self, index: int) -> int:
        return index // self.clips_per_shard

    def shard_indices(self, shard: int) -> range:
        return range(shard * self.clips_per_shard, min(self.n, (shard + 1) * self.clips_per_shard))

    def header(self) -> dict:
        return {"plan": 1, "n": self.n, "seed": self.seed, "clips_per_shard": self.clips_per_shard,
                "identity_hash": self.identity_hash}


def index_of(key: str) -> int:
    """The clip index inside a clip id ``s<seed>_<index>``."""
    return int(key.rsplit("_", 1)[1])


def write_plan(store: RunStore, plan: Plan, cache: str | os.PathLike[str] | None = None) -> None:
    """Write the plan file, streamed and published atomically (``cache``: where a remote run's
    plan is staged)."""
    with store.publishing(PLAN_NAME, cache) as f:
        f.write(json.dumps(plan.header()) + "\n")
        for k in range(plan.n):
            f.write(f'{{"index":{k},"clip_id":"{plan.key(k)}","seed":{plan.seed},"shard":{plan.shard_of(k)}}}\n')


def read_plan_header(store: RunStore) -> dict | None:
    """The plan's header, or None when the run has no plan yet."""
    if not store.exists(PLAN_NAME):
        return None
    with store.fs.open(store.path(PLAN_NAME), "rt") as f:
        return json.loads(f.readline())
