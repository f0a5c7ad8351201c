# Occupancy generated from layouts: the DiT's training, the generated chain of each held-out scene
# (results/scenes/<scene>/gen/: occ_gen, render, lidar) and of edited layouts
# (results/scenes/<scene>/edits/<name>/, from the layout.zarr a user writes there with `uniscene layout-edit`).
import shlex

GEN_CHAIN = r"gen|edits/[^/]+"  # the {chain} folder of a scene's generated chains
OCC_GEN_VARIANTS = {  # scored beside the default on the first occ_dit.eval_frames frames (results/metrics/occ_gen.json)
    "ddim50": "--sampler ddim --steps 50",
    "leak_noise_prior": "--leak-noise-prior",  # the leaks read the scene's label occupancy
    "leak_meta": "--leak-meta",
}


def chain_layout(wildcards):
    """The layout a generated chain starts from: the scene's own (gen) or the edited one in its edits/<name>/ folder."""
    folder = "" if wildcards.chain == "gen" else f"{wildcards.chain}/"
    return f"results/scenes/{wildcards.scene}/{folder}layout.zarr"


rule train_occ_dit:
    input:
        vae="results/models/occ_vae",
        occupancy=expand("results/scenes/{scene}/occ_label.zarr", scene=TRAIN_SCENES),
        layout=expand("results/scenes/{scene}/layout.zarr", scene=TRAIN_SCENES),
    output:
        directory("results/models/occ_dit"),
    log:
        "logs/train_occ_dit/occ_dit.log",
    benchmark:
        "logs/train_occ_dit/occ_dit.benchmark.tsv"
    params:
        config=STAGE_CONFIG["train_occ_dit"],
        config_file=STAGE_CONFIG_FILE["train_occ_dit"],
    threads: 2
    resources:
        gpu=TRAIN_GPUS,  # one process per GPU under torchrun (train_gpus)
        mem_mb=8000,
    shell:
        "{TRAIN_LAUNCH} train-occ-dit --config {params.config_file:q} --vae {input.vae:q} --occupancy {input.occupancy:q} "
        "--layout {input.layout:q} --out {output:q} > {log} 2>&1"


rule occ_gen:
    input:
        model="results/models/occ_dit",
        layout=chain_layout,
    output:
        store=directory("results/scenes/{scene}/{chain}/occ_gen.zarr"),
        preview=report("results/scenes/{scene}/{chain}/occ_gen.png", caption="../workflow/report/occ_gen.rst", category="occ_gen"),
    wildcard_constraints:
        chain=GEN_CHAIN,
    log:
        "logs/occ_gen/{scene}/{chain}.log",
    benchmark:
        "logs/occ_gen/{scene}/{chain}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["occ_gen"],
        config_file=STAGE_CONFIG_FILE["occ_gen"],
    threads: 2
    resources:
        mem_mb=6000,
    shell:
        "uniscene occ-gen --config {params.config_file:q} --model {input.model:q} --layout {input.layout:q} "
        "--out {output.store:q} --preview {output.preview:q} > {log} 2>&1"


# The DDIM-50 reference and the reference's two leaks (they alone read the labels), on a scene's first frames.
rule occ_gen_variant:
    input:
        model="results/models/occ_dit",
        layout="results/scenes/{scene}/layout.zarr",
        labels=lambda w: [f"results/scenes/{w.scene}/occ_label.zarr"] if w.variant.startswith("leak") else [],
    output:
        directory("results/scenes/{scene}/gen/variants/{variant}.zarr"),
    wildcard_constraints:
        variant="|".join(OCC_GEN_VARIANTS),
    log:
        "logs/occ_gen_variant/{scene}/{variant}.log",
    benchmark:
        "logs/occ_gen_variant/{scene}/{variant}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["occ_gen"],
        config_file=STAGE_CONFIG_FILE["occ_gen"],
        flags=lambda w, input: " ".join([OCC_GEN_VARIANTS[w.variant], *(f"--labels {shlex.quote(p)}" for p in input.labels)]),
        frames=f"0:{config['occ_dit']['eval_frames']}",
    threads: 2
    resources:
        mem_mb=6000,
    shell:
        "uniscene occ-gen --config {params.config_file:q} --model {input.model:q} --layout {input.layout:q} "
        "--frames {params.frames} {params.flags} --out {output:q} > {log} 2>&1"


# The generated chains' renders and LiDAR: the label chain's rules on a chain's occ_gen.zarr (and its layout's markings).
use rule render_gaussians as render_gaussians_gen with:
    input:
        frames="results/scenes/{scene}/frames.zarr",
        occupancy="results/scenes/{scene}/{chain}/occ_gen.zarr",
        layout=chain_layout,
    output:
        store=directory("results/scenes/{scene}/{chain}/render.zarr"),
        preview=report("results/scenes/{scene}/{chain}/render.png", caption="../workflow/report/render.rst", category="render"),
    wildcard_constraints:
        chain=GEN_CHAIN,
    log:
        "logs/render_gaussians_gen/{scene}/{chain}.log",
    benchmark:
        "logs/render_gaussians_gen/{scene}/{chain}.benchmark.tsv"


use rule lidar_generate as lidar_generate_gen with:
    input:
        model="results/models/lidar",
        frames="results/scenes/{scene}/frames.zarr",
        occupancy="results/scenes/{scene}/{chain}/occ_gen.zarr",
    output:
        store=directory("results/scenes/{scene}/{chain}/lidar.zarr"),
        sweeps=directory("results/scenes/{scene}/{chain}/lidar_pcd"),
    wildcard_constraints:
        chain=GEN_CHAIN,
    log:
        "logs/lidar_generate_gen/{scene}/{chain}.log",
    benchmark:
        "logs/lidar_generate_gen/{scene}/{chain}.benchmark.tsv"
