# Scores against the synthetic ground truth (only the synthetic dataset has one). A job names every store it
# scores, one of each kind per scene in scene order (uniscene/commands/metrics.py INPUTS says which kinds);
# `uniscene metrics` reads those and the dataset's truth, and makes nothing else.
import shlex

from uniscene.commands.metrics import HELD_OUT_STAGES, STORE_PATHS
from uniscene.commands.metrics import INPUTS as METRIC_INPUTS


def metric_stores(wildcards):
    """{kind: [store per scene]}; LiDAR and generated occupancy are scored on the held-out scenes (on every scene where none
    is held out)."""
    scenes = (VAL_SCENES or SCENES) if wildcards.stage in HELD_OUT_STAGES else SCENES
    return {kind: expand("results/scenes/{scene}/{path}.zarr", scene=scenes, path=STORE_PATHS.get(kind, kind))
            for kind in METRIC_INPUTS[wildcards.stage]}


def metric_store_arguments(wildcards, input):
    """`--frames a b --layout a b`: the stores of `metric_stores` as `uniscene metrics` takes them."""
    return " ".join(f"--{kind.replace('_', '-')} {' '.join(map(shlex.quote, getattr(input, kind)))}" for kind in METRIC_INPUTS[wildcards.stage])


rule metrics_score:
    input:
        unpack(metric_stores),
        dataset=dataset_input,
    output:
        "results/metrics/{stage}.json",
    log:
        "logs/metrics_score/{stage}.log",
    benchmark:
        "logs/metrics_score/{stage}.benchmark.tsv"
    params:
        config=lambda w: STAGE_CONFIG[f"metrics_{w.stage}"],
        config_file=lambda w: STAGE_CONFIG_FILE[f"metrics_{w.stage}"],
        stores=metric_store_arguments,
    wildcard_constraints:
        stage="|".join(METRIC_INPUTS),
    threads: 1
    shell:
        "uniscene metrics {wildcards.stage} --config {params.config_file:q} {params.stores} --out {output:q} > {log} 2>&1"
