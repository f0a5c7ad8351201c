# uniscene: occupancy-centric driving-scene generation. See README.md and DESIGN.md.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/common.smk"
include: "rules/synth.smk"
include: "rules/frames.smk"
include: "rules/occ_label.smk"
include: "rules/layout.smk"
include: "rules/render.smk"
include: "rules/lidar.smk"
include: "rules/metrics.smk"


rule all:
    input:
        all_outputs(),
