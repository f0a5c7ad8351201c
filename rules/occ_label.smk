rule occ_label_build:
    input:
        frames="results/scenes/{scene}/frames.zarr",
    output:
        store=directory("results/scenes/{scene}/occ_label.zarr"),
        preview=report("results/scenes/{scene}/occ_label.png", caption="../workflow/report/occ_label.rst", category="occ_label"),
    log:
        "logs/occ_label_build/{scene}.log",
    benchmark:
        "logs/occ_label_build/{scene}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["occ_label"],
        config_file=STAGE_CONFIG_FILE["occ_label"],
    threads: 2
    resources:
        mem_mb=8000,
    shell:
        "uniscene occ-label --config {params.config_file:q} --frames {input.frames:q} --out {output.store:q} "
        "--preview {output.preview:q} > {log} 2>&1"
