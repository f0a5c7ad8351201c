rule synth_dataset:
    output:
        directory(DATAROOT) if SYNTHETIC else [],
    log:
        "logs/synth_dataset/synth.log",
    benchmark:
        "logs/synth_dataset/synth.benchmark.tsv"
    params:
        config=STAGE_CONFIG["synth"],
        config_file=STAGE_CONFIG_FILE["synth"],
    threads: 2
    shell:
        "uniscene synth --config {params.config_file:q} --out {output:q} > {log} 2>&1"
