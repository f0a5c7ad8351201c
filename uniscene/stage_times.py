"""Each stage's share of a workflow run's time, from the benchmark file Snakemake writes per job.

Every rule names a `benchmark:` file under logs/<rule>/ (a TSV whose `s` column is the job's wall
seconds and `max_rss` its peak memory in MB). Jobs run side by side, so the shares are of the
summed job seconds, not of the run's wall clock; the wall clock is `make demo`'s own `time`.
"""

import csv
import html
from dataclasses import dataclass
from pathlib import Path

from uniscene.errors import UserError


@dataclass(frozen=True)
class StageTime:
    rule: str
    jobs: int
    seconds: float
    share: float  # of all jobs' seconds
    max_rss_mb: float  # the largest of its jobs


def read_stage_times(logs) -> list[StageTime]:
    """Per rule (the first folder under `logs`), its jobs' summed seconds and share, largest first."""
    logs = Path(logs)
    files = sorted(logs.rglob("*.benchmark.tsv"))
    if not files:
        raise UserError(f"no Snakemake benchmark files (*.benchmark.tsv) under {logs}: run the workflow first (`make demo`)")
    per_rule = {}
    for path in files:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows or "s" not in rows[0]:
            raise UserError(f"benchmark file {path} has no `s` column: delete it and rerun its job")
        rule = path.relative_to(logs).parts[0]
        seconds, jobs, rss = per_rule.get(rule, (0.0, 0, 0.0))
        peak = max(_number(row.get("max_rss")) for row in rows)
        per_rule[rule] = (seconds + sum(float(row["s"]) for row in rows) / len(rows), jobs + 1, max(rss, peak))
    total = sum(seconds for seconds, _, _ in per_rule.values()) or 1.0
    stages = [StageTime(rule, jobs, seconds, seconds / total, rss) for rule, (seconds, jobs, rss) in per_rule.items()]
    return sorted(stages, key=lambda s: -s.seconds)


def _number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):  # Snakemake writes "NA" where it could not measure
        return 0.0


def as_text(stages: list[StageTime]) -> str:
    total = sum(s.seconds for s in stages)
    lines = [f"{'rule':<24} {'jobs':>4} {'seconds':>9} {'share':>6} {'peak RSS':>9}"]
    lines += [f"{s.rule:<24} {s.jobs:>4} {s.seconds:>9.1f} {100 * s.share:>5.1f}% {s.max_rss_mb / 1024:>7.2f} GB" for s in stages]
    lines.append(f"{'all jobs':<24} {sum(s.jobs for s in stages):>4} {total:>9.1f}")
    return "\n".join(lines)


def as_html(stages: list[StageTime]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(s.rule)}</td><td>{s.jobs}</td><td>{s.seconds:.1f}</td><td>{100 * s.share:.1f} %</td>"
        f"<td>{s.max_rss_mb / 1024:.2f}</td><td><div style='background:#4a7;height:10px;width:{300 * s.share:.0f}px'></div></td></tr>"
        for s in stages)
    total = sum(s.seconds for s in stages)
    return (f"<!doctype html><meta charset='utf-8'><title>Stage times</title><body style='font-family:sans-serif'>"
            f"<h2>Each stage's share of the run's job time</h2><p>Summed wall seconds of each rule's jobs (jobs run side by side: "
            f"the shares are of the {total:.0f} job-seconds, not of the wall clock).</p><table cellpadding='4'>"
            f"<tr><th>rule</th><th>jobs</th><th>seconds</th><th>share</th><th>peak RSS, GB</th><th></th></tr>{rows}</table></body>")
