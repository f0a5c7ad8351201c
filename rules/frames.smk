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

