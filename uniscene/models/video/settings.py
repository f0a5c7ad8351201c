"""The `video:` config section: what training reads (VideoTraining) and what generation reads (VideoGeneration).

Two classes, so that a change to how scenes are sampled never retrains the network. Meanings and
defaults: uniscene/schemas/config.schema.yaml.
"""

from dataclasses import dataclass, fields

from uniscene.errors import UserError
from uniscene.settings import Settings


@dataclass(frozen=True)
class VideoTraining(Settings):
    """The networks and their training."""

    SECTION = "video"

    model: str  # network size: tiny | paper (uniscene.models.video.network.MODEL_CONFIGS)
    image_size: tuple  # (H, W) of the generated images; the autoencoder's and UNet's downsampling must divide it
    clip_frames: int  # Tc: frames per clip
    context_frames: int  # k: frames of the previous clip that each later clip is conditioned on
    cross_view: bool  # attention between ring-neighbour cameras after every spatio-temporal transformer
    pretrained: str | None  # a local diffusers folder holding unet/ (and vae/) to fine-tune from; None trains from scratch
    vae_steps: int  # optimiser steps of the autoencoder trained from scratch (unused with a pretrained vae/)
    steps: int  # optimiser steps of the UNet and adapter
    batch_size: int  # clips (of all six views) per optimiser step
    learning_rate: float
    ema_decay: float
    condition_dropout: float  # share of training clips without maps and boxes (classifier-free guidance)
    context_share: float  # share of training clips whose first k frames are given as context, without loss
    max_boxes: int  # box tokens per camera and frame (the nearest boxes in view)

    def __post_init__(self):
        if self.context_frames >= self.clip_frames:
            raise UserError(f"config key video.context_frames ({self.context_frames}) must be below video.clip_frames "
                            f"({self.clip_frames}): a clip needs at least one frame to generate")
        if len(self.image_size) != 2:
            raise UserError(f"config key video.image_size must be [height, width], got {list(self.image_size)}")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class VideoGeneration(Settings):
    """Scenes from a trained pipeline."""

    SECTION = "video"

    sampler: str  # ddim | dpmsolver++ | euler (uniscene.models.video.pipeline.SAMPLERS)
    inference_steps: int
    guidance_scale: float  # classifier-free guidance on the maps and boxes; 1 runs the network once per step
    first_frame: bool  # reads ground truth: the scene's real first images condition the first clip

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
