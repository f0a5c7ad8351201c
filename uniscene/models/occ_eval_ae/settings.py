"""The `occ_eval_ae:` config section: the evaluation-only occupancy autoencoder and its training.

Meanings and defaults: uniscene/schemas/config.schema.yaml.
"""

from dataclasses import dataclass, fields

from uniscene.settings import Settings


@dataclass(frozen=True)
class OccEvalAESettings(Settings):
    SECTION = "occ_eval_ae"

    model: str  # network size: tiny | paper (uniscene.models.occ_eval_ae.network.MODEL_CONFIGS)
    seed: int  # its own seed (not the top-level one): the ruler stays put while the generator's seed changes
    steps: int  # optimiser steps
    batch_size: int  # frames per step
    learning_rate: float  # peak learning rate of AdamW (one-cycle schedule)
    frame_stride: int  # train on every n-th 12 Hz frame of each training scene

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
