"""The video network on its own: the walk of the UNet against diffusers' forward, zero-initialised additions,
cross-view attention between ring neighbours only, a short training where the loss falls, and the MP4 writer."""

import numpy as np
import pytest
import torch

from uniscene.models.video.network import (BOX_FEATURES, CAMERA_FEATURES, ADDED_TIME_IDS, CrossViewAttention, MultiViewVideoModel,
                                           VideoConditions, build_adapter, spatio_temporal_unet)
from uniscene.viz.video import TILE_ROWS, tile_views, write_mp4
from uniscene.sensors import CAMERA_NAMES

SIZE = (32, 64)  # 16x autoencoder -> 2 x 4 latents
LATENT = (8, 2, 4)


def tiny_model(cross_view: bool = True, frames: int = 3) -> MultiViewVideoModel:
    torch.manual_seed(0)
    unet = spatio_temporal_unet("tiny", LATENT[0], frames)
    return MultiViewVideoModel(unet, build_adapter(unet, "tiny", cross_view, SIZE, 16, frames, 1, 4)).eval()


def random_inputs(batch: int = 1, frames: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    views = len(CAMERA_NAMES)
    sample = torch.randn(batch, views, frames, *LATENT, generator=g)
    conditions = VideoConditions(
        context_mask=torch.zeros(batch, frames, dtype=torch.bool),
        semantic=torch.randint(0, 20, (batch, views, frames, *SIZE), generator=g).to(torch.uint8),
        depth=torch.rand(batch, views, frames, *SIZE, generator=g),
        cameras=torch.randn(batch, views, 1, CAMERA_FEATURES, generator=g).expand(-1, -1, frames, -1),
        boxes=torch.randn(batch, views, 1, 4, BOX_FEATURES, generator=g).expand(-1, -1, frames, -1, -1),
        box_valid=torch.ones(batch, views, frames, 4, dtype=torch.bool),
        dropped=torch.zeros(batch, dtype=torch.bool))
    return sample, conditions


def test_at_initialisation_the_model_is_the_unet():
    """Condition encoder and cross-view attention start at zero: the walk equals diffusers' own forward of the UNet."""
    model = tiny_model()
    sample, conditions = random_inputs()
    context = torch.zeros_like(sample)
    with torch.no_grad():
        out = model(sample, torch.tensor([400]), context, conditions).sample
        encoded = model.encode_conditions(conditions)
        assert encoded.features.abs().max() == 0
        tokens = encoded.tokens.view(1, 6, 3, *encoded.tokens.shape[1:])[:, :, 0].flatten(0, 1)  # the same every frame
        reference = model.unet(torch.cat([sample, context], 3).flatten(0, 1), torch.tensor([400]), tokens,
                               torch.tensor([ADDED_TIME_IDS]).expand(6, 3)).sample
    assert out.shape == sample.shape
    torch.testing.assert_close(out.flatten(0, 1), reference, atol=1e-5, rtol=1e-5)


def test_cross_view_attention_mixes_ring_neighbours_only():
    torch.manual_seed(0)
    attention = CrossViewAttention(32, head_dim=16)
    x = torch.randn(1, 6, 2, 32, 3, 4)
    assert torch.equal(attention(x), x)  # zero-initialised output: the identity
    torch.nn.init.normal_(attention.to_out.weight, std=0.2)
    changed = x.clone()
    changed[:, 0] += torch.randn_like(changed[:, 0])
    with torch.no_grad():
        difference = (attention(changed) - attention(x)).abs().amax(dim=(0, 2, 3, 4, 5))  # per view
    moved = [v for v in range(6) if difference[v] > 1e-6]
    assert moved == [0, 1, 5]  # view 0 itself and its ring neighbours FRONT_RIGHT and FRONT_LEFT, not view 3 (BACK)


def test_no_cross_view_builds_none():
    model = tiny_model(cross_view=False)
    assert model.adapter.cross_view_attention is None
    sample, conditions = random_inputs()
    with torch.no_grad():
        assert model(sample, torch.tensor([10]), torch.zeros_like(sample), conditions).sample.shape == sample.shape


def test_short_training_lowers_the_loss():
    from uniscene.models.video.pipeline import training_scheduler
    from uniscene.models.video.settings import VideoTraining
    from uniscene.models.video.train import make_loss_fn
    from uniscene.settings import default_settings

    model = tiny_model().train()
    settings = default_settings(VideoTraining, clip_frames=3, context_frames=1)
    scheduler = training_scheduler()
    sample, conditions = random_inputs(batch=2, seed=1)
    batch = {"latents": sample, **{name: getattr(conditions, name) for name in ("semantic", "depth", "cameras", "boxes", "box_valid")}}
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):  # the same draws (timestep, noise, dropout) every step: the loss of one fixed batch
        loss, _ = make_loss_fn(scheduler, settings, torch.Generator().manual_seed(0))(model, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_mp4_tiles_six_views_and_decodes(tmp_path):
    av = pytest.importorskip("av")
    frames, height, width = 5, 24, 40
    rgb = np.zeros((frames, 6, height, width, 3), np.uint8)
    for v in range(6):
        rgb[:, v] = 40 * v  # each view its grey
    mosaic = tile_views(rgb[0])
    assert mosaic.shape == (2 * height, 3 * width, 3)
    for r, row in enumerate(TILE_ROWS):  # the nuScenes arrangement
        for c, name in enumerate(row):
            assert mosaic[r * height, c * width, 0] == 40 * CAMERA_NAMES.index(name)
    path = write_mp4(tmp_path / "clip.mp4", rgb)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "libx264")
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(decoded) == frames
    assert decoded[0].shape == (2 * height, 3 * width, 3)
    assert abs(int(decoded[0][height + 2, 2 * width + 2, 0]) - 40 * CAMERA_NAMES.index("CAM_BACK_LEFT")) < 12
