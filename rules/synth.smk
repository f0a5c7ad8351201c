rule synth_dataset:
    output:
        directory(DATAROOT) if SYNTHETIC else [],
    log:
        "logs/synth_dataset/synth.log",
    benchmark:
        "logs/synth_dataset/synth.benchmark.tsv"
    params:
        config=CONFIG_JSON,
    threads: 2
    shell:
        "uniscene synth --config {params.config:q} --out {output:q} > {log} 2>&1"
