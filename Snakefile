# uniscene: occupancy-centric driving-scene generation. See README.md and docs/architecture.md.
# The config is checked, and its defaults filled in, by workflow/common.smk with uniscene's own schema.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/common.smk"
include: "rules/synth.smk"
include: "rules/frames.smk"
include: "rules/occ_label.smk"
include: "rules/layout.smk"
include: "rules/occ_vae.smk"
include: "rules/render.smk"
include: "rules/lidar.smk"
include: "rules/occ_gen.smk"
include: "rules/video.smk"
include: "rules/metrics.smk"
include: "rules/export.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
        report_outputs(),
        "results/report/stage_times.html",
