# Scores against the synthetic ground truth (only the synthetic dataset has one).
METRIC_INPUTS = {
    "frames": ["frames"],
    "occ_label": ["frames", "occ_label"],
    "layout": ["frames", "layout"],
    "render": ["frames", "render"],
    "lidar": ["frames", "occ_label", "lidar"],
}


rule metrics_score:
    input:
        dataset=dataset_input,
        stores=lambda w: expand("results/scenes/{scene}/{store}.zarr", scene=SCENES, store=METRIC_INPUTS[w.stage]),
    output:
        "results/metrics/{stage}.json",
    log:
        "logs/metrics_score/{stage}.log",
    benchmark:
        "logs/metrics_score/{stage}.benchmark.tsv"
    params:
        config=lambda w: STAGE_CONFIG[f"metrics_{w.stage}"],
        config_file=lambda w: STAGE_CONFIG_FILE[f"metrics_{w.stage}"],
    wildcard_constraints:
        stage="|".join(METRIC_INPUTS),
    threads: 1
    shell:
        "uniscene metrics {wildcards.stage} --config {params.config_file:q} --results results --out {output:q} > {log} 2>&1"
