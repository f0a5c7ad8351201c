# The occupancy VAE: trained on the training scenes' occupancy and scored on the held-out scenes. occ_vae.source
# says which occupancy: the scenes' occ_label.zarr (labels), Occ3D's gts/ at occ_vae.occ3d_root (occ3d), or both.
import shlex

OCC_VAE_SCORED_SCENES = VAL_SCENES or SCENES  # every scene where none is held out


def occ_vae_stores(scenes):
    """{"occupancy": the scenes' occ_label.zarr} where occ_vae.source reads labels, else {} (rule inputs, unpacked)."""
    if config["occ_vae"]["source"] == "occ3d":
        return {}
    return {"occupancy": expand("results/scenes/{scene}/occ_label.zarr", scene=scenes)}


def occ_vae_sources(scenes, input):
    """`--occupancy a b` and/or `--occ3d DIR --scenes x y`: the occupancy `uniscene train-occ-vae` / `eval-occ-vae` read."""
    section, parts = config["occ_vae"], []
    if section["source"] != "occ3d":
        parts.append("--occupancy " + " ".join(map(shlex.quote, input.occupancy)))
    if section["source"] != "labels":
        parts.append(f"--occ3d {shlex.quote(str(section['occ3d_root']))} --scenes " + " ".join(map(shlex.quote, scenes)))
    return " ".join(parts)


rule train_occ_vae:
    input:
        unpack(lambda w: occ_vae_stores(TRAIN_SCENES)),
    output:
        directory("results/models/occ_vae"),
    log:
        "logs/train_occ_vae/occ_vae.log",
    benchmark:
        "logs/train_occ_vae/occ_vae.benchmark.tsv"
    params:
        config=STAGE_CONFIG["train_occ_vae"],
        config_file=STAGE_CONFIG_FILE["train_occ_vae"],
        sources=lambda w, input: occ_vae_sources(TRAIN_SCENES, input),
    threads: 2
    resources:
        gpu=TRAIN_GPUS,  # one process per GPU under torchrun (train_gpus)
        mem_mb=4000,
    shell:
        "{TRAIN_LAUNCH} train-occ-vae --config {params.config_file:q} {params.sources} --out {output:q} > {log} 2>&1"


rule eval_occ_vae:
    input:
        unpack(lambda w: occ_vae_stores(OCC_VAE_SCORED_SCENES)),
        model="results/models/occ_vae",
    output:
        "results/metrics/occ_vae.json",
    log:
        "logs/eval_occ_vae/occ_vae.log",
    benchmark:
        "logs/eval_occ_vae/occ_vae.benchmark.tsv"
    params:
        config=STAGE_CONFIG["eval_occ_vae"],
        config_file=STAGE_CONFIG_FILE["eval_occ_vae"],
        sources=lambda w, input: occ_vae_sources(OCC_VAE_SCORED_SCENES, input),
    threads: 2
    resources:
        mem_mb=4000,
    shell:
        "uniscene eval-occ-vae --config {params.config_file:q} --model {input.model:q} {params.sources} --out {output:q} > {log} 2>&1"
