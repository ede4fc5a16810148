"""`dr-data status`: what a run folder holds, from its run.json, plan, markers and index."""

from __future__ import annotations

import json
import time
from collections import Counter

from dr.errors import UserError
from dr.pipeline import markers as mk
from dr.pipeline.engine import DRIVER_JSON, RUN_JSON, STALE_S, STATS_JSON, lost_keys, read_index
from dr.pipeline.plan import Plan
from dr.pipeline.run_store import RunStore


def run_status(url: str) -> dict:
    """Planned, done, failed (with reasons), running, lost and shards of the run at ``url``."""
    store = RunStore(url)
    if not store.exists(RUN_JSON):
        raise UserError(f"{url} is not a run folder (no run.json); make one with `dr-data generate --out {url}`")
    run = json.loads(store.read_text(RUN_JSON))
    plan = Plan(run["n"], run["seed"], run["clips_per_shard"], run["identity_hash"])
    state = mk.scan(store)
    index = read_index(store)
    # run.* may change from session to session: the latest one's limit says what is lost
    sessions = run.get("sessions") or [{}]
    max_attempts = sessions[-1].get("run", run["config"]["run"])["max_attempts"]
    lost = lost_keys(plan, index, state, max_attempts)
    reasons = Counter()
    for attempts in state.failed.values():
        for r in attempts.values():
            reasons[f"{r.get('kind')}: {r.get('reason')}"] += 1
    driver = json.loads(store.read_text(DRIVER_JSON)) if store.exists(DRIVER_JSON) else {}
    age = time.time() - float(driver.get("updated", 0)) if driver else None
    live = bool(driver) and not driver.get("ended") and age is not None and age < STALE_S
    stats = json.loads(store.read_text(STATS_JSON)) if store.exists(STATS_JSON) else {}
    return {
        "run": store.url, "run_id": run["run_id"], "dry_run": run.get("dry_run", False),
        "planned": plan.n, "done": len(state.done), "remaining": plan.n - len(state.done) - len(lost),
        "failed_attempts": state.failed_attempts, "retries": state.retries,
        "failure_reasons": dict(reasons.most_common(20)),
        "quarantined_assets": state.quarantine,
        "running": sorted(state.running) if live else [],
        "interrupted": sorted(state.running) if not live else [],
        "lost": lost,
        "shards_planned": plan.shards, "shards_written": len(index["shards"]),
        "samples_in_shards": index.get("samples", 0), "shard_bytes": sum(s["bytes"] for s in index["shards"]),
        "driver": {"live": live, "pid": driver.get("pid"), "host": driver.get("host"),
                   "heartbeat_age_s": round(age, 1) if age is not None else None},
        "complete": len(index["shards"]) == plan.shards,
        "stages_s": stats.get("stages_s", {}),
    }
