rule frames_interpolate:
    input:
        dataset=dataset_input,
        infos=config["dataset"]["info_pkl"] or [],
    output:
        directory("results/scenes/{scene}/frames.zarr"),
    log:
        "logs/frames_interpolate/{scene}.log",
    benchmark:
        "logs/frames_interpolate/{scene}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["frames"],
        config_file=STAGE_CONFIG_FILE["frames"],
    threads: 1
    shell:
        "uniscene frames --config {params.config_file:q} --scene {wildcards.scene} --out {output:q} > {log} 2>&1"


# On demand (not part of `all`): the frames of a split as an mmdet3d v1.1 info file.
rule frames_export_infos:
    input:
        lambda w: expand("results/scenes/{scene}/frames.zarr", scene={"train": TRAIN_SCENES, "val": VAL_SCENES}[w.split]),
    output:
        "results/infos/nuscenes_infos_{split}.pkl",
    log:
        "logs/frames_export_infos/{split}.log",
    benchmark:
        "logs/frames_export_infos/{split}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["frames_infos"],
        config_file=STAGE_CONFIG_FILE["frames_infos"],
    wildcard_constraints:
        split="train|val",
    threads: 1
    shell:
        "uniscene frames --config {params.config_file:q} --export-infos {output:q} --split {wildcards.split} --results results > {log} 2>&1"
