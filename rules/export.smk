# Exports to other tools' formats (uniscene/export/), of the held-out scenes' label chain (label occupancy and what was
# generated from it) and generated chain (results/scenes/<scene>/gen/): results/export/<chain>/ holds a nuScenes version
# (nuscenes/), Occ3D labels (occ3d/gts/) and the mmdet3d infos of its generated frames (nuscenes_infos.pkl). The source
# frames' infos per split are on demand (results/export/source/nuscenes_infos_<split>.pkl).
import shlex

EXPORT_CHAIN = "label|gen"
EXPORT_STORES = {  # chain -> {kind: the store of a scene, under results/scenes/<scene>/}
    "label": {"lidar": "lidar.zarr", "video": "video.zarr", "occupancy": "occ_label.zarr"},
    "gen": {"lidar": "gen/lidar.zarr", "video": "gen/video.zarr", "occupancy": "gen/occ_gen.zarr", "layout": "layout.zarr"},
}


def export_scenes():
    """The scenes the exports hold: the held-out ones (every scene where none is held out)."""
    return VAL_SCENES or SCENES


def video_rule_exists() -> bool:
    """Whether a rule writes video stores: the nuScenes export reads them where one does, else has no camera data."""
    return any(str(path).endswith("video.zarr") for rule in workflow.rules for path in rule.output)


def export_stores(*kinds):
    """Input function: {kind: [store per export scene]} of the chain, for `kinds` that the chain has (video: where a rule writes it)."""

    def stores(wildcards):
        paths = EXPORT_STORES[wildcards.chain]
        wanted = [k for k in kinds if k in paths and (k != "video" or video_rule_exists())]
        out = {"frames": expand("results/scenes/{scene}/frames.zarr", scene=export_scenes())}
        out.update({k: expand("results/scenes/{scene}/{path}", scene=export_scenes(), path=paths[k]) for k in wanted})
        return out

    return stores


def optional_stores(wildcards, input):
    """`--video a b --layout a b` for the optional stores that the job's input holds."""
    return " ".join(f"--{kind} {' '.join(map(shlex.quote, getattr(input, kind)))}" for kind in ("video", "layout") if kind in input.keys())


rule export_nuscenes:
    input:
        unpack(export_stores("lidar", "video", "layout")),
    output:
        directory("results/export/{chain}/nuscenes"),
    wildcard_constraints:
        chain=EXPORT_CHAIN,
    log:
        "logs/export_nuscenes/{chain}.log",
    benchmark:
        "logs/export_nuscenes/{chain}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["export_nuscenes"],
        config_file=STAGE_CONFIG_FILE["export_nuscenes"],
        stores=optional_stores,
    threads: 1
    shell:
        "uniscene export nuscenes --config {params.config_file:q} --frames {input.frames:q} --lidar {input.lidar:q} {params.stores} "
        "--chain {wildcards.chain} --out {output:q} > {log} 2>&1"


rule export_occ3d:
    input:
        unpack(export_stores("occupancy")),
    output:
        directory("results/export/{chain}/occ3d"),
    wildcard_constraints:
        chain=EXPORT_CHAIN,
    log:
        "logs/export_occ3d/{chain}.log",
    benchmark:
        "logs/export_occ3d/{chain}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["export_occ3d"],
        config_file=STAGE_CONFIG_FILE["export_occ3d"],
    threads: 1
    shell:
        "uniscene export occ3d --config {params.config_file:q} --frames {input.frames:q} --occupancy {input.occupancy:q} "
        "--out {output:q} > {log} 2>&1"


# The infos of a chain's generated frames name the files of its nuScenes export (relative to that folder).
rule export_infos:
    input:
        unpack(export_stores("lidar", "video", "layout")),
        nuscenes="results/export/{chain}/nuscenes",
    output:
        "results/export/{chain}/nuscenes_infos.pkl",
    wildcard_constraints:
        chain=EXPORT_CHAIN,
    log:
        "logs/export_infos/{chain}.log",
    benchmark:
        "logs/export_infos/{chain}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["export_infos"],
        config_file=STAGE_CONFIG_FILE["export_infos"],
        stores=optional_stores,
    threads: 1
    shell:
        "uniscene export infos --config {params.config_file:q} --frames {input.frames:q} --lidar {input.lidar:q} {params.stores} "
        "--chain {wildcards.chain} --nuscenes {input.nuscenes:q} --out {output:q} > {log} 2>&1"


# On demand (not part of `all`): a split's frames with the source dataset's own sensor files, as an mmdet3d info file.
rule export_infos_source:
    input:
        lambda w: expand("results/scenes/{scene}/frames.zarr", scene={"train": TRAIN_SCENES, "val": VAL_SCENES}[w.split]),
    output:
        "results/export/source/nuscenes_infos_{split}.pkl",
    wildcard_constraints:
        split="train|val",
    log:
        "logs/export_infos_source/{split}.log",
    benchmark:
        "logs/export_infos_source/{split}.benchmark.tsv"
    params:
        config=STAGE_CONFIG["export_infos"],
        config_file=STAGE_CONFIG_FILE["export_infos"],
    threads: 1
    shell:
        "uniscene export infos --config {params.config_file:q} --frames {input:q} --out {output:q} > {log} 2>&1"
