"""summary.json of a `segdeploy batch` run: what ran, per-image records, failures and totals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.infer.batch.outputs import write_atomic
from segdeploy.infer.pipeline import Failure
from segtrain.common.files import json_text

SUMMARY_NAME = "summary.json"


@dataclass
class RunTotals:
    """Counts and timings of one run; images/s counts only images processed in this run."""

    found: int = 0
    processed: int = 0
    resumed: int = 0
    failed: int = 0
    wall_seconds: float = 0.0
    model_seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "infer": 0.0, "write": 0.0})

    def finish(self, wall_seconds: float, records: list[dict], failed: int) -> None:
        """Record the run's wall time and add up the per-image records of this run."""
        self.wall_seconds, self.processed, self.failed = wall_seconds, len(records), failed
        for record in records:
            for stage in self.stage_seconds:
                self.stage_seconds[stage] += record["seconds"].get(stage, 0.0)
        self.model_seconds = self.stage_seconds["infer"]  # each image's share of its model calls

    def to_dict(self) -> dict:
        def rate(seconds: float) -> float | None:
            return round(self.processed / seconds, 3) if self.processed and seconds > 0 else None

        return {"images_found": self.found, "processed": self.processed, "resumed": self.resumed,
                "failed": self.failed, "seconds": round(self.wall_seconds, 3),
                "model_seconds": round(self.model_seconds, 3),
                # Per-stage seconds summed over images; stages overlap in threads, so they exceed "seconds".
                "stage_seconds_summed": {k: round(v, 3) for k, v in self.stage_seconds.items()},
                "images_per_second": rate(self.wall_seconds),
                "model_images_per_second": rate(self.model_seconds)}


def build_summary(run: dict, records: list[dict], failures: list[Failure], totals: RunTotals,
                  ground_truth: dict | None = None) -> dict:
    """The summary.json document; `run` describes the model, provider and settings."""
    doc = {**run, "images": sorted(records, key=lambda r: r["input"]),
           "failures": [{"input": f.input, "reason": f.reason} for f in sorted(failures, key=lambda f: f.input)],
           "totals": totals.to_dict()}
    if ground_truth is not None:
        doc["ground_truth"] = ground_truth
    return doc


def write_summary(out_dir: Path, doc: dict, name: str = SUMMARY_NAME) -> Path:
    """Write `doc` atomically as OUT/`name` (summary.json, or a shard's summary.shard-K-of-N.json).

    UTF-8 JSON; file-name bytes that are not UTF-8 appear as \\xNN (segtrain.common.files.json_text).
    """
    path = Path(out_dir) / name
    write_atomic(path, (json_text(doc, indent=2) + "\n").encode("utf-8"))
    return path
