"""The `lidar:` config section: what training reads (LidarSettings), what casting sweeps reads (LidarCasting) and
what the learned method's sampling adds (LidarSampling).

Apart, so that a change to how sweeps are sampled (lidar.ray_drop) never retrains the model nor
recasts the ray-cast baseline. Meanings and defaults: uniscene/schemas/config.schema.yaml.
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
class LidarCasting(Settings):
    """Sweeps cast through occupancy: both methods, the learned one and the ray-cast baseline."""

    SECTION = "lidar"

    cast_batch: int


@dataclass(frozen=True)
class LidarSampling(Settings):
    """The learned method's draw (the ray-cast baseline draws nothing)."""

    SECTION = "lidar"

    ray_drop: str  # threshold: dropped where p > 0.5; sample: each ray drops with its predicted probability (seeded)
