"""The `lidar:` section of the config, with its defaults in one place."""

from dataclasses import dataclass, fields

from uniscene.errors import UserError


@dataclass(frozen=True)
class LidarSettings:
    source: str = "label"  # occupancy that `uniscene lidar` reads: label (occ_label.zarr) | generated (occ_gen.zarr)
    model: str = "tiny"  # network size: tiny | paper (uniscene.models.lidar.network.MODEL_CONFIGS)
    epochs: int = 8
    batch_size: int = 8  # range-image crops per step
    crop_width: int = 272  # azimuth columns per training crop; 0 trains on whole sweeps
    learning_rate: float = 2e-3
    frame_stride: int = 1  # train on every n-th 12 Hz frame
    cast_batch: int = 8  # sweeps cast through occupancy (and run through the network) together
    ray_drop: str = "threshold"  # threshold: dropped where p > 0.5; sample: each ray drops with its predicted probability (seeded)

    @classmethod
    def from_config(cls, config: dict) -> "LidarSettings":
        section = config.get("lidar") or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise UserError(f"config section lidar has unknown key(s) {unknown}: known keys are {sorted(known)}")
        return cls(**section)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
