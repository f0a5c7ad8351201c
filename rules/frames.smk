rule frames_interpolate:
    input:
        dataset_input,
    output:
        directory("results/scenes/{scene}/frames.zarr"),
    log:
        "logs/frames_interpolate/{scene}.log",
    benchmark:
        "logs/frames_interpolate/{scene}.benchmark.tsv"
    params:
        config=CONFIG_JSON,
    threads: 1
    shell:
        "uniscene frames --config {params.config:q} --scene {wildcards.scene} --out {output:q} > {log} 2>&1"
