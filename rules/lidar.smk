rule lidar_train:
    input:
        frames=expand("results/scenes/{scene}/frames.zarr", scene=TRAIN_SCENES),
        occupancy=expand("results/scenes/{scene}/occ_label.zarr", scene=TRAIN_SCENES),
    output:
        directory("results/models/lidar"),
    log:
        "logs/lidar_train/lidar.log",
    benchmark:
        "logs/lidar_train/lidar.benchmark.tsv"
    params:
        config=STAGE_CONFIG["train_lidar"],
        config_file=STAGE_CONFIG_FILE["train_lidar"],
    threads: 2
    resources:
        gpu=TRAIN_GPUS,  # one process per GPU under torchrun (train_gpus)
    shell:
        "{TRAIN_LAUNCH} train-lidar --config {params.config_file:q} --frames {input.frames:q} "
        "--occupancy {input.occupancy:q} --out {output:q} > {log} 2>&1"


rule lidar_generate:
    input:
        model="results/models/lidar",
        frames="results/scenes/{scene}/frames.zarr",
        occupancy="results/scenes/{scene}/occ_label.zarr",
    output:
        store=directory("results/scenes/{scene}/lidar.zarr"),
        sweeps=directory("results/scenes/{scene}/lidar_pcd"),
    log:
        "logs/lidar_generate/{scene}.log",
    benchmark:
        "logs/lidar_generate/{scene}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["lidar"],
        config_file=STAGE_CONFIG_FILE["lidar"],
    threads: 2
    shell:
        "uniscene lidar --config {params.config_file:q} --model {input.model:q} --frames {input.frames:q} "
        "--occupancy {input.occupancy:q} --out {output.store:q} --export {output.sweeps:q} > {log} 2>&1"


# The no-learning baseline (the occupancy ray-cast alone) that the LiDAR metrics compare the learned sweeps with.
rule lidar_raycast:
    input:
        model="results/models/lidar",
        frames="results/scenes/{scene}/frames.zarr",
        occupancy="results/scenes/{scene}/occ_label.zarr",
    output:
        directory("results/scenes/{scene}/lidar_raycast.zarr"),
    log:
        "logs/lidar_raycast/{scene}.log",
    benchmark:
        "logs/lidar_raycast/{scene}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["lidar_raycast"],
        config_file=STAGE_CONFIG_FILE["lidar_raycast"],
    threads: 2
    shell:
        "uniscene lidar --method raycast --config {params.config_file:q} --model {input.model:q} --frames {input.frames:q} "
        "--occupancy {input.occupancy:q} --out {output:q} > {log} 2>&1"
