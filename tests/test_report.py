"""The report's figures (uniscene report) against what they must show, and the report in a real browser:
Debian's Chromium (installed by tools/install-system-packages) plays an MP4 the video stage's writer made, and
opens a Snakemake report holding one, which it draws to a screenshot."""

import json
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from uniscene import cli
from uniscene.classes import FREE, OCC_CLASS_ID, OCC_COLORS
from uniscene.grid import OccGrid
from uniscene.stage_times import read_stage_times
from uniscene.viz.occupancy_3d import BACKGROUND, FACE_SHADE, occupancy_3d_rgb
from uniscene.viz.report_figures import save_metrics_tables, training_history
from uniscene.viz.video import write_mp4

GRID = OccGrid((-4.0, -4.0, 0.0, 4.0, 4.0, 1.6), 0.4)  # 20 x 20 x 4
CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tools/install-system-packages)")


def test_3d_view_draws_a_voxel_where_it_lies_with_its_faces_shaded():
    semantics = np.full(GRID.shape, FREE, np.uint8)
    assert (occupancy_3d_rgb(semantics, GRID, width_px=200) == BACKGROUND).all()
    car = OCC_CLASS_ID["car"]
    semantics[15, 10, 0] = car  # ahead of the ego (+x) on the centre line
    image = occupancy_3d_rgb(semantics, GRID, width_px=200, azimuth_deg=0.0, elevation_deg=40.0)
    drawn = np.argwhere((image != BACKGROUND).any(-1))
    assert len(drawn) > 20
    # seen from behind: +y (left) is on the image's left, the voxel's column y = 10 of 20 sits at the image's middle
    centre_col = drawn[:, 1].mean() / image.shape[1]
    assert abs(centre_col - 0.5) < 0.05
    # forward is up: a voxel nearer the ego (x = 4 of 20) is drawn lower in the picture
    near = np.full(GRID.shape, FREE, np.uint8)
    near[4, 10, 0] = car
    near_rows = np.argwhere((occupancy_3d_rgb(near, GRID, width_px=200) != BACKGROUND).any(-1))[:, 0]
    assert near_rows.mean() > drawn[:, 0].mean()
    # colours: the class colour, shaded per face; the top face (shade 1.0) is the brightest
    colours = {tuple(c) for c in image[drawn[:, 0], drawn[:, 1]]}
    expected = {tuple(np.clip(OCC_COLORS[car] * shade, 0, 255).astype(np.uint8)) for shade in FACE_SHADE.values()}
    assert colours <= expected and tuple(OCC_COLORS[car]) in colours
    # a voxel covered on top by another shows no top face of its own: a column of two draws one top face
    column = semantics.copy()
    column[15, 10, 1] = car
    tall = occupancy_3d_rgb(column, GRID, width_px=200)
    assert (tall != BACKGROUND).any(-1).sum() > len(drawn)


def test_stage_times_sum_jobs_per_rule(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rule, name, seconds, rss in [("render", "a", 30.0, 700.0), ("render", "b", 10.0, 900.0), ("train", "t", 60.0, "NA")]:
        (tmp_path / rule).mkdir(exist_ok=True)
        (tmp_path / rule / f"{name}.benchmark.tsv").write_text(header + f"{seconds}\t0:00:30\t{rss}\t0\t0\t0\t0\t0\t0\t0\n")
    stages = read_stage_times(tmp_path)
    assert [(s.rule, s.jobs, s.seconds, s.max_rss_mb) for s in stages] == [("train", 1, 60.0, 0.0), ("render", 2, 40.0, 900.0)]
    assert [s.share for s in stages] == [0.6, 0.4]
    out = tmp_path / "times.html"
    assert cli.main(["report", "times", "--logs", str(tmp_path), "--out", str(out)]) == 0
    assert "render" in out.read_text() and "40.0" in out.read_text()
    assert cli.main(["report", "times", "--logs", str(tmp_path / "render" / "none"), "--out", str(tmp_path / "x.html")]) == 2
    assert not (tmp_path / "x.html").exists()


def test_metrics_tables_and_training_history(tmp_path):
    (tmp_path / "render.json").write_text(json.dumps({"pixel_accuracy": 0.8741234, "per_class": {"car": 0.5}, "protocol": "x"}))
    page = save_metrics_tables(tmp_path / "m.html", [tmp_path / "render.json"]).read_text()
    assert "pixel_accuracy" in page and "0.8741" in page and "per_class.car" in page
    model = tmp_path / "model"
    model.mkdir()
    records = [{"step": 10, "losses": {"mse": 1.0}}, {"step": 20, "losses": {"mse": 0.5}}]
    (model / "history.jsonl").write_text("\n".join(map(json.dumps, records)))
    assert training_history(model) == records
    (model / "training.json").write_text(json.dumps({"history": records[:1]}))
    assert training_history(model) == records[:1]  # the final summary wins over the running log
    assert cli.main(["report", "training", "--models", str(tmp_path / "absent"), "--out", str(tmp_path / "c.png")]) == 2


def _chromium(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=timeout)


def _six_view_clip(frames=24, height=48, width=64) -> np.ndarray:
    """[T, 6, H, W, 3]: each view its own colour, a bright bar sweeping across it."""
    rgb = np.zeros((frames, 6, height, width, 3), np.uint8)
    rgb[..., :] = (np.arange(6)[:, None, None, None] * 40 + 20).astype(np.uint8)
    for t in range(frames):
        rgb[t, :, :, (t * width) // frames] = 255
    return rgb


@needs_chromium
def test_chromium_plays_the_video_stages_mp4(tmp_path):
    write_mp4(tmp_path / "clip.mp4", _six_view_clip())
    (tmp_path / "page.html").write_text(textwrap.dedent("""\
        <!doctype html><body><video id="v" src="clip.mp4" muted autoplay></video><pre id="state">loading</pre>
        <script>
          const v = document.getElementById("v"), state = document.getElementById("state");
          v.addEventListener("timeupdate", () => {
            if (v.currentTime > 0.3) state.textContent = `played ${v.currentTime.toFixed(2)} ${v.videoWidth}x${v.videoHeight}`;
          });
          v.addEventListener("error", () => { state.textContent = "error " + v.error.code; });
        </script>"""))
    result = _chromium("--virtual-time-budget=4000", "--dump-dom", (tmp_path / "page.html").as_uri())
    match = re.search(r"played ([\d.]+) (\d+)x(\d+)", result.stdout)
    assert match, f"chromium did not play the MP4: {result.stdout[-500:]} {result.stderr[-500:]}"
    assert (int(match[2]), int(match[3])) == (3 * 64, 2 * 48)  # the six views tiled 3 x 2


@needs_chromium
def test_a_snakemake_report_with_a_video_opens_in_chromium(tmp_path):
    """A one-rule workflow whose output MP4 is a report item: `snakemake --report` builds the page, Chromium draws it."""
    write_mp4(tmp_path / "clip.mp4", _six_view_clip())
    (tmp_path / "caption.rst").write_text("A six-view clip.\n")
    (tmp_path / "Snakefile").write_text(textwrap.dedent("""\
        rule all:
            input: "out/clip.mp4"
        rule clip:
            input: "clip.mp4"
            output: report("out/clip.mp4", caption="caption.rst", category="video")
            shell: "cp {input} {output}"
        """))
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(tmp_path), "--snakefile", str(tmp_path / "Snakefile")]
    subprocess.run(snakemake, check=True, capture_output=True)
    subprocess.run([*snakemake, "--report", str(tmp_path / "report.html")], check=True, capture_output=True)
    assert "video/mp4" in (tmp_path / "report.html").read_text()
    _chromium("--window-size=1200,800", f"--screenshot={tmp_path / 'report.png'}", "--virtual-time-budget=4000",
              (tmp_path / "report.html").as_uri())
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("RGB"))
    assert shot.shape[:2] == (800, 1200)
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 20  # a drawn page, not a blank one
