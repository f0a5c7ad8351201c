rule render_gaussians:
    input:
        frames="results/scenes/{scene}/frames.zarr",
        occupancy="results/scenes/{scene}/occ_label.zarr",
        layout="results/scenes/{scene}/layout.zarr",
    output:
        store=directory("results/scenes/{scene}/render.zarr"),
        preview=report("results/scenes/{scene}/render.png", caption="../workflow/report/render.rst", category="render"),
    log:
        "logs/render_gaussians/{scene}.log",
    benchmark:
        "logs/render_gaussians/{scene}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["render"],
        config_file=STAGE_CONFIG_FILE["render"],
    threads: 2
    resources:
        mem_mb=8000,
    shell:
        "uniscene render --config {params.config_file:q} --frames {input.frames:q} --occupancy {input.occupancy:q} "
        "--layout {input.layout:q} --out {output.store:q} --preview {output.preview:q} > {log} 2>&1"
