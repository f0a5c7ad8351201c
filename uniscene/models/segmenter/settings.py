"""The `segmenter:` config section: the small segmentation network that the video metrics train and read.

Meanings and defaults: uniscene/schemas/config.schema.yaml.
"""

from dataclasses import dataclass, fields

from uniscene.errors import UserError
from uniscene.settings import Settings


@dataclass(frozen=True)
class SegmenterSettings(Settings):
    SECTION = "segmenter"

    model: str  # network size: tiny | paper (uniscene.models.segmenter.network.MODEL_CONFIGS)
    steps: int  # optimiser steps
    batch_size: int  # images per step
    learning_rate: float  # peak learning rate of AdamW (one-cycle schedule)
    crop_size: tuple | None  # [height, width] of the random training crop; None: whole images
    frame_stride: int  # train on every n-th 12 Hz frame of each training scene (all six cameras)
    image_size: tuple | None  # [height, width] the network reads; None: the dataset's camera images

    def __post_init__(self):
        if self.crop_size is not None and len(self.crop_size) != 2:
            raise UserError(f"config key segmenter.crop_size must be [height, width] or null; got {list(self.crop_size)}")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 8):
            raise UserError(f"config key segmenter.image_size must be [height, width] of at least 8 pixels each, or null; got {list(self.image_size)}")

    def as_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}
