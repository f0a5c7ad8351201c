"""The `occ_dit:` config section: what training reads (OccDiTTraining) and what generation reads (OccGenSettings).

Two classes, so that a change to how scenes are sampled never retrains the network. Meanings and
defaults: uniscene/schemas/config.schema.yaml.
"""

from dataclasses import dataclass, fields

from uniscene.errors import UserError
from uniscene.settings import Settings


@dataclass(frozen=True)
class OccDiTTraining(Settings):
    """The network and its training."""

    SECTION = "occ_dit"

    model: str  # network size: tiny | paper (uniscene.models.occ_dit.network.MODEL_CONFIGS)
    clip_frames: int  # Tc: frames per clip
    context_frames: int  # k: frames of the previous clip that each later clip starts from
    crop_latent: int  # train on crops of crop_latent x crop_latent latent cells; 0: whole frames
    steps: int
    batch_size: int  # clips per optimiser step
    learning_rate: float
    ema_decay: float
    prediction_type: str  # v_prediction | epsilon
    layout_dropout: float  # share of training clips given the null layout (classifier-free guidance)
    context_share: float  # share of training clips whose first k frames are given clean, without loss
    meta_dropout: float  # share of training clips given the null meta vector

    def __post_init__(self):
        if self.context_frames >= self.clip_frames:
            raise UserError(f"config key occ_dit.context_frames ({self.context_frames}) must be below occ_dit.clip_frames "
                            f"({self.clip_frames}): a clip needs at least one frame to generate")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class OccGenSettings(Settings):
    """Scenes from a trained pipeline."""

    SECTION = "occ_dit"

    sampler: str  # ddim | dpmsolver++ | euler (uniscene.models.occ_dit.pipeline.SAMPLERS)
    inference_steps: int
    guidance_scale: float
    leak_noise_prior: bool  # start from noise + noise_prior_weight x the label occupancy's latents (reads labels)
    noise_prior_weight: float
    leak_meta: bool  # condition on the meta vector counted from the label occupancy (reads labels)
    compile: str  # off | default | reduce-overhead: the transformer under torch.compile with that mode

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
