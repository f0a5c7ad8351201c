"""The `lidar:` config section: what training reads (LidarSettings) and what sampling reads (LidarSampling).

Two classes, so that a change to how sweeps are sampled (lidar.ray_drop) never retrains the
model. Meanings and defaults: uniscene/schemas/config.schema.yaml.
"""

from dataclasses import dataclass, fields

from uniscene.settings import Settings


@dataclass(frozen=True)
class LidarSettings(Settings):
    """The model and its training."""

    SECTION = "lidar"

    model: str  # network size: tiny | paper (uniscene.models.lidar.network.MODEL_CONFIGS)
    epochs: int
    batch_size: int  # range-image crops per step
    crop_width: int  # azimuth columns per training crop; 0 trains on whole sweeps
    learning_rate: float
    frame_stride: int  # train on every n-th 12 Hz frame
    cast_batch: int  # sweeps cast through occupancy (and run through the network) together

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class LidarSampling(Settings):
    """Sweeps from a trained model."""

    SECTION = "lidar"

    ray_drop: str  # threshold: dropped where p > 0.5; sample: each ray drops with its predicted probability (seeded)
    cast_batch: int
