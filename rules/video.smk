# Multi-view video from rendered maps: the model's training (with and without cross-view attention), the video of
# each held-out scene's label renders (results/scenes/<scene>/video.zarr), the no-cross-view comparison
# (variants/video_no_crossview.zarr) and the video of every generated chain (<chain>/video.zarr), each with its MP4.


rule train_video:
    input:
        frames=expand("results/scenes/{scene}/frames.zarr", scene=TRAIN_SCENES),
        render=expand("results/scenes/{scene}/render.zarr", scene=TRAIN_SCENES),
        layout=expand("results/scenes/{scene}/layout.zarr", scene=TRAIN_SCENES),
        dataset=dataset_input,
    output:
        directory("results/models/video"),
    log:
        "logs/train_video/video.log",
    benchmark:
        "logs/train_video/video.benchmark.tsv"
    params:
        config=STAGE_CONFIG["train_video"],
        config_file=STAGE_CONFIG_FILE["train_video"],
        flags="",
    threads: 2
    resources:
        gpu=TRAIN_GPUS,  # one process per GPU under torchrun (train_gpus)
        mem_mb=8000,
    shell:
        "{TRAIN_LAUNCH} train-video --config {params.config_file:q} --frames {input.frames:q} --render {input.render:q} "
        "--layout {input.layout:q} --out {output:q} {params.flags} > {log} 2>&1"


use rule train_video as train_video_no_crossview with:
    output:
        directory("results/models/video_no_crossview"),
    log:
        "logs/train_video_no_crossview/video_no_crossview.log",
    benchmark:
        "logs/train_video_no_crossview/video_no_crossview.benchmark.tsv"
    params:
        config=STAGE_CONFIG["train_video"],
        config_file=STAGE_CONFIG_FILE["train_video"],
        flags="--no-cross-view",


rule video:
    input:
        model="results/models/video",
        frames="results/scenes/{scene}/frames.zarr",
        render="results/scenes/{scene}/render.zarr",
        layout="results/scenes/{scene}/layout.zarr",
    output:
        store=directory("results/scenes/{scene}/video.zarr"),
        mp4=report("results/scenes/{scene}/video.mp4", caption="../workflow/report/video.rst", category="video"),
    log:
        "logs/video/{scene}/label.log",
    benchmark:
        "logs/video/{scene}/label.benchmark.tsv"
    params:
        config=STAGE_CONFIG["video"],
        config_file=STAGE_CONFIG_FILE["video"],
    threads: 2
    resources:
        mem_mb=6000,
    shell:
        "uniscene video --config {params.config_file:q} --model {input.model:q} --frames {input.frames:q} "
        "--render {input.render:q} --layout {input.layout:q} --out {output.store:q} --mp4 {output.mp4:q} > {log} 2>&1"


use rule video as video_variant with:
    input:
        model="results/models/video_no_crossview",
        frames="results/scenes/{scene}/frames.zarr",
        render="results/scenes/{scene}/render.zarr",
        layout="results/scenes/{scene}/layout.zarr",
    output:
        store=directory("results/scenes/{scene}/variants/video_no_crossview.zarr"),
        mp4="results/scenes/{scene}/variants/video_no_crossview.mp4",
    log:
        "logs/video_variant/{scene}/no_crossview.log",
    benchmark:
        "logs/video_variant/{scene}/no_crossview.benchmark.tsv"


use rule video as video_gen with:
    input:
        model="results/models/video",
        frames="results/scenes/{scene}/frames.zarr",
        render="results/scenes/{scene}/{chain}/render.zarr",
        layout=chain_layout,
    output:
        store=directory("results/scenes/{scene}/{chain}/video.zarr"),
        mp4=report("results/scenes/{scene}/{chain}/video.mp4", caption="../workflow/report/video.rst", category="video"),
    wildcard_constraints:
        chain=GEN_CHAIN,
    log:
        "logs/video_gen/{scene}/{chain}.log",
    benchmark:
        "logs/video_gen/{scene}/{chain}.benchmark.tsv"
