"""The `occ_vae:` config section: what training reads (OccVAESettings) and what scoring reads (OccVAEScoring).

Two classes, so that a change to how the model is scored never retrains it. Meanings and defaults:
uniscene/schemas/config.schema.yaml.
"""

from dataclasses import dataclass, fields

from uniscene.errors import UserError
from uniscene.settings import section_settings

SOURCES = ("labels", "occ3d", "both")


@dataclass(frozen=True)
class OccVAESettings:
    """The network, its data and its training."""

    source: str  # labels (occ_label.zarr of the training scenes) | occ3d (occ3d_root) | both
    occ3d_root: str | None  # folder holding Occ3D's gts/<scene>/<sample>/labels.npz
    model: str  # network size: tiny | paper (uniscene.models.occ_vae.network.MODEL_CONFIGS)
    latent_channels: int | None  # None: the model size's
    downsample_factor: int | None  # latent grid = grid x, y / this; None: the model size's
    clip_frames: int  # frames per training clip (the decoder attends across them)
    batch_size: int  # clips per optimiser step
    crop_cells: int  # training crops of crop_cells x crop_cells cells in x, y; 0: whole grid
    steps: int
    learning_rate: float
    ema_decay: float
    kl_weight: float
    lovasz_weight: float
    lovasz_voxels: int  # voxels per step the Lovasz-softmax is taken on (a random draw); 0: all
    class_weights: str  # enet | none
    num_workers: int  # DataLoader processes reading clips

    @classmethod
    def from_config(cls, config: dict) -> "OccVAESettings":
        settings = section_settings(cls, config, "occ_vae")
        if settings.source != "labels" and not settings.occ3d_root:
            raise UserError(f"config key occ_vae.source is {settings.source!r} but occ_vae.occ3d_root is not set: set it to "
                            f"the folder holding Occ3D's gts/, or set occ_vae.source: labels")
        return settings

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def model_config(self, grid_shape: tuple) -> dict:
        """The OccVAE keyword arguments: the model size's, with this section's overrides, for `grid_shape`."""
        from uniscene.models.occ_vae.network import MODEL_CONFIGS

        config = {**MODEL_CONFIGS[self.model], "grid_shape": tuple(int(v) for v in grid_shape)}
        for name in ("latent_channels", "downsample_factor"):
            if getattr(self, name) is not None:
                config[name] = getattr(self, name)
        d = config["downsample_factor"]
        if grid_shape[0] % d or grid_shape[1] % d:
            raise UserError(f"config key occ_vae.downsample_factor ({d}) must divide the grid's x and y cells {tuple(grid_shape[:2])}: "
                            f"choose a power of two that does (or change grid:)")
        if self.crop_cells and (self.crop_cells % d or self.crop_cells > min(grid_shape[:2])):
            raise UserError(f"config key occ_vae.crop_cells ({self.crop_cells}) must be a multiple of the downsample factor {d} "
                            f"and at most the grid's {min(grid_shape[:2])} cells (or 0: whole grid)")
        return config


@dataclass(frozen=True)
class OccVAEScoring:
    """Reconstruction scores of a trained model."""

    clip_frames: int  # clips of this many frames, as in training
    eval_batch: int  # clips encoded and decoded together

    @classmethod
    def from_config(cls, config: dict) -> "OccVAEScoring":
        return section_settings(cls, config, "occ_vae")
