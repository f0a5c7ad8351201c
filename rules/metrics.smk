# Scores against the synthetic ground truth (only the synthetic dataset has one). A job names every store it
# scores, one of each kind per scene in scene order (uniscene/commands/metrics.py INPUTS says which kinds);
# `uniscene metrics` reads those and the dataset's truth, and makes nothing else.
import shlex

from uniscene.commands.metrics import HELD_OUT_STAGES, MODEL_ARGUMENTS, STORE_PATHS
from uniscene.commands.metrics import INPUTS as METRIC_INPUTS


def metric_stores(wildcards):
    """{kind: [store per scene]}; LiDAR and generated occupancy are scored on the held-out scenes (on every scene where none
    is held out)."""
    scenes = (VAL_SCENES or SCENES) if wildcards.stage in HELD_OUT_STAGES else SCENES
    return {kind: expand("results/scenes/{scene}/{path}.zarr", scene=scenes, path=STORE_PATHS.get(kind, kind))
            for kind in METRIC_INPUTS[wildcards.stage]}


def metric_store_arguments(wildcards, input):
    """`--frames a b --layout a b`: the stores of `metric_stores` as `uniscene metrics` takes them, and the models of `metric_models`."""
    stores = [f"--{kind.replace('_', '-')} {' '.join(map(shlex.quote, getattr(input, kind)))}" for kind in METRIC_INPUTS[wildcards.stage]]
    models = [f"--{name.replace('_', '-')} {shlex.quote(getattr(input, name))}" for name in MODEL_ARGUMENTS.get(wildcards.stage, {})]
    return " ".join(stores + models)


def metric_models(wildcards):
    """{name: model folder} that a stage's metrics read (the video's segmenter: results/models/segmenter; occ_gen's
    evaluation autoencoder: results/models/occ_eval_ae)."""
    return {name: f"results/models/{name}" for name in MODEL_ARGUMENTS.get(wildcards.stage, {})}


rule train_segmenter:
    input:
        frames=expand("results/scenes/{scene}/frames.zarr", scene=TRAIN_SCENES),
        val_frames=expand("results/scenes/{scene}/frames.zarr", scene=VAL_SCENES),
        dataset=dataset_input,
    output:
        directory("results/models/segmenter"),
    log:
        "logs/train_segmenter/segmenter.log",
    benchmark:
        "logs/train_segmenter/segmenter.benchmark.tsv"
    params:
        config=STAGE_CONFIG["train_segmenter"],
        config_file=STAGE_CONFIG_FILE["train_segmenter"],
    threads: 2
    resources:
        gpu=TRAIN_GPUS,  # one process per GPU under torchrun (train_gpus)
    shell:
        "{TRAIN_LAUNCH} train-segmenter --config {params.config_file:q} --frames {input.frames:q} "
        "--val-frames {input.val_frames:q} --out {output:q} > {log} 2>&1"


# The ruler of occ_gen.json's F3D and MMD: an occupancy autoencoder apart from the generator's VAE, trained on the
# training scenes' label occupancy alone (the figures compare the held-out scenes' labels with generated frames).
rule train_occ_eval_ae:
    input:
        occupancy=expand("results/scenes/{scene}/occ_label.zarr", scene=TRAIN_SCENES),
    output:
        directory("results/models/occ_eval_ae"),
    log:
        "logs/train_occ_eval_ae/occ_eval_ae.log",
    benchmark:
        "logs/train_occ_eval_ae/occ_eval_ae.benchmark.tsv"
    params:
        config=STAGE_CONFIG["train_occ_eval_ae"],
        config_file=STAGE_CONFIG_FILE["train_occ_eval_ae"],
    threads: 2
    resources:
        gpu=TRAIN_GPUS,  # one process per GPU under torchrun (train_gpus)
        mem_mb=4000,
    shell:
        "{TRAIN_LAUNCH} train-occ-eval-ae --config {params.config_file:q} --occupancy {input.occupancy:q} --out {output:q} > {log} 2>&1"


rule metrics_score:
    input:
        unpack(metric_stores),
        unpack(metric_models),
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
