# The report's figures that no stage draws itself (uniscene report <part>): per held-out scene its occupancy in 3D
# (label and generated) and its LiDAR beside the recorded sweep; every model's training curves; every stage's
# metrics as tables; and, last, each stage's share of the run's job time. `snakemake --report` shows them.

REPORT_SCENE_FIGURES = ["occupancy_3d.png", "lidar_bev.png"]


def report_outputs():
    """The report's figures of rule `all` (the stage times come last: they read every job's benchmark file)."""
    figures = [f"results/report/scenes/{scene}/{name}" for scene in VAL_SCENES for name in REPORT_SCENE_FIGURES]
    figures.append("results/report/training_curves.png")
    if SYNTHETIC:
        figures.append("results/report/metrics.html")
    return figures


def trained_models():
    return sorted({path for path in all_outputs() if path.startswith("results/models/")})


rule report_occupancy:
    input:
        label="results/scenes/{scene}/occ_label.zarr",
        generated="results/scenes/{scene}/gen/occ_gen.zarr",
    output:
        report("results/report/scenes/{scene}/occupancy_3d.png", caption="../workflow/report/occupancy_3d.rst",
               category="occupancy 3D", subcategory="{scene}"),
    log:
        "logs/report_occupancy/{scene}.log",
    benchmark:
        "logs/report_occupancy/{scene}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["report"],
        config_file=STAGE_CONFIG_FILE["report"],
    shell:
        "uniscene report occupancy --config {params.config_file:q} --occupancy {input.label:q} {input.generated:q} "
        "--out {output:q} > {log} 2>&1"


rule report_lidar:
    input:
        frames="results/scenes/{scene}/frames.zarr",
        label="results/scenes/{scene}/lidar.zarr",
        generated="results/scenes/{scene}/gen/lidar.zarr",
    output:
        report("results/report/scenes/{scene}/lidar_bev.png", caption="../workflow/report/lidar_bev.rst",
               category="lidar", subcategory="{scene}"),
    log:
        "logs/report_lidar/{scene}.log",
    benchmark:
        "logs/report_lidar/{scene}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["report"],
        config_file=STAGE_CONFIG_FILE["report"],
    shell:
        "uniscene report lidar --config {params.config_file:q} --frames {input.frames:q} --lidar {input.label:q} "
        "{input.generated:q} --out {output:q} > {log} 2>&1"


rule report_training:
    input:
        trained_models(),
    output:
        report("results/report/training_curves.png", caption="../workflow/report/training_curves.rst", category="training"),
    log:
        "logs/report_training/report.log",
    benchmark:
        "logs/report_training/report.benchmark.tsv"
    params:
        config=STAGE_CONFIG["report"],
        config_file=STAGE_CONFIG_FILE["report"],
    shell:
        "uniscene report training --config {params.config_file:q} --models {input:q} --out {output:q} > {log} 2>&1"


rule report_metrics:
    input:
        [path for path in all_outputs() if path.startswith("results/metrics/")],
    output:
        report("results/report/metrics.html", caption="../workflow/report/metrics.rst", category="metrics"),
    log:
        "logs/report_metrics/report.log",
    params:
        config=STAGE_CONFIG["report"],
        config_file=STAGE_CONFIG_FILE["report"],
    shell:
        "uniscene report metrics --config {params.config_file:q} --metrics {input:q} --out {output:q} > {log} 2>&1"


# Last: it reads the benchmark file of every other job (so it has none of its own); `make demo` prints its log.
rule report_stage_times:
    input:
        all_outputs(),
        report_outputs(),
    output:
        report("results/report/stage_times.html", caption="../workflow/report/stage_times.rst", category="stage times"),
    log:
        "logs/report_stage_times/report.log",
    params:
        config=STAGE_CONFIG["report"],
        config_file=STAGE_CONFIG_FILE["report"],
    shell:
        "uniscene report times --config {params.config_file:q} --logs logs --out {output:q} > {log} 2>&1"
