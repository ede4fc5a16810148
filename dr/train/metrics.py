"""The run's metrics: ``logs/metrics.jsonl`` (one JSON object per logged step) and TensorBoard
events beside it. A resumed run first drops the lines past the step it resumes from, so the file
reads as one uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

from dr.files import write_text_atomic


class MetricsLog:
    def __init__(self, logs: Path, enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.path = logs / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        logs.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= resume_step]
            write_text_atomic(self.path, "".join(ln + "\n" for ln in keep))
        self._f = open(self.path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(logs), purge_step=resume_step + 1 if resume_step else None)
        except ImportError:  # tensorboard is optional: metrics.jsonl is the record
            self._tb = None

    def write(self, rec: dict) -> None:
        if not self.enabled:
            return
        self._f.write(json.dumps(rec, sort_keys=True) + "\n")
        self._f.flush()
        if self._tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"train/{k}", v, rec["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self._f.close()
        if self._tb is not None:
            self._tb.close()
