rule occ_label_build:
    input:
        frames="results/scenes/{scene}/frames.zarr",
    output:
        directory("results/scenes/{scene}/occ_label.zarr"),
    log:
        "logs/occ_label_build/{scene}.log",
    benchmark:
        "logs/occ_label_build/{scene}.benchmark.tsv"
    params:
        config=CONFIG_JSON,
    threads: 2
    resources:
        mem_mb=8000,
    shell:
        "uniscene occ-label --config {params.config:q} --frames {input.frames:q} --out {output:q} > {log} 2>&1"
