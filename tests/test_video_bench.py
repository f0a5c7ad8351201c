"""benchmarks/bench_video.py runs end to end at its CPU test size and prints the records the GPU run reports."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_video_runs_at_test_size(tmp_path):
    out = tmp_path / "video.jsonl"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_video.py"), "--size", "test", "--device", "cpu", "--steps", "1",
                    "--train-steps", "1", "--repeats", "1", "--cross-view", "on", "--out", str(out)], check=True, cwd=REPO,
                   capture_output=True, timeout=600)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = {record["what"]: record for record in records}
    assert "error" not in kinds, kinds.get("error")
    assert kinds["params"]["denoiser"] == kinds["params"]["unet"] + kinds["params"]["adapter"] > 0
    assert kinds["train"]["clips_per_s"] > 0 and kinds["sample"]["seconds_per_clip"] > 0 and kinds["flops"]["tflop_per_clip"] > 0
    assert kinds["sample"]["cross_view"] is True and kinds["sample"]["steps"] == 1 and kinds["sample"]["frames"] == 2
