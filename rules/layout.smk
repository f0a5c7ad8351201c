rule layout_rasterise:
    input:
        frames="results/scenes/{scene}/frames.zarr",
    output:
        store=directory("results/scenes/{scene}/layout.zarr"),
        preview=report("results/scenes/{scene}/layout.png", caption="../workflow/report/layout.rst", category="layout"),
    log:
        "logs/layout_rasterise/{scene}.log",
    benchmark:
        "logs/layout_rasterise/{scene}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["layout"],
        config_file=STAGE_CONFIG_FILE["layout"],
    threads: 1
    shell:
        "uniscene layout --config {params.config_file:q} --frames {input.frames:q} --out {output.store:q} "
        "--preview {output.preview:q} > {log} 2>&1"
