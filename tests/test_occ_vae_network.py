"""The occupancy VAE's network and loss on small random inputs: shapes, the compression ratio, the KL
against torch.distributions, the vectorised Lovasz-softmax against Berman et al.'s per-class loop and
against 1 - IoU, clips of whole scenes. CPU, a few seconds."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from uniscene.models.occ_vae.loss import ENET_C, class_weights, lovasz_softmax, vae_loss
from uniscene.models.occ_vae.network import MODEL_CONFIGS, NUM_LABELS, OccLatentDistribution, OccVAE
from uniscene.models.clips import clip_starts
from uniscene.models.occ_vae.scenes import decode_scene, encode_frames

SMALL = dict(grid_shape=(16, 24, 4), embed_dim=2, base_channels=8, channel_multipliers=(1, 2), layers_per_block=1,
             latent_channels=3, downsample_factor=4, patch_size=2, attention_heads=2, norm_num_groups=4)


def lovasz_reference(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Berman et al.'s lovasz_softmax_flat, one class at a time (classes='present')."""
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).float()
        if fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        gt_sorted = fg[perm]
        gts = gt_sorted.sum()
        intersection = gts - gt_sorted.cumsum(0)
        union = gts + (1 - gt_sorted).cumsum(0)
        jaccard = 1.0 - intersection / union
        jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
        losses.append(torch.dot(errors_sorted, jaccard))
    return torch.stack(losses).mean()


def test_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 3, 4, 5, 5, generator=generator)
    logvar = torch.randn(2, 3, 4, 5, 5, generator=generator) * 2
    ours = OccLatentDistribution(mean, logvar).kl()
    truth = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mean), torch.ones_like(mean)))
    torch.testing.assert_close(ours, truth, rtol=1e-5, atol=1e-6)
    # the reference's reading (its sigma taken as a log-variance where it is a standard deviation) differs
    assert not torch.allclose(OccLatentDistribution(mean, logvar.exp().sqrt()).kl(), truth)


def test_lovasz_matches_reference_loop():
    generator = torch.Generator().manual_seed(1)
    for n, present in ((500, 18), (300, 5)):
        probs = torch.randn(n, NUM_LABELS, generator=generator).mul(3).softmax(1)
        labels = torch.randint(0, present, (n,), generator=generator)
        torch.testing.assert_close(lovasz_softmax(probs, labels), lovasz_reference(probs, labels), rtol=1e-5, atol=1e-6)
    # gradients agree too
    logits = torch.randn(200, NUM_LABELS, generator=generator, requires_grad=True)
    labels = torch.randint(0, NUM_LABELS, (200,), generator=generator)
    ours = torch.autograd.grad(lovasz_softmax(logits.softmax(1), labels), logits)[0]
    theirs = torch.autograd.grad(lovasz_reference(logits.softmax(1), labels), logits)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)


def test_lovasz_of_hard_predictions_is_one_minus_iou():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 6, 1000)
    predicted = np.where(rng.random(1000) < 0.7, labels, rng.integers(0, 8, 1000))
    ious = [np.sum((labels == c) & (predicted == c)) / np.sum((labels == c) | (predicted == c)) for c in np.unique(labels)]
    probs = torch.nn.functional.one_hot(torch.from_numpy(predicted), NUM_LABELS).double()
    assert float(lovasz_softmax(probs, torch.from_numpy(labels))) == pytest.approx(1 - np.mean(ious), abs=1e-12)


def test_class_weights():
    counts = np.zeros(NUM_LABELS)
    counts[[4, 8, 17]] = [1000, 10, 100000]
    weights = class_weights(counts, "enet").numpy()
    frequency = counts / counts.sum()
    assert weights[8] > weights[4] > weights[17]  # rarer, heavier
    assert float((frequency * weights).sum()) == pytest.approx(1.0, rel=1e-6)
    assert weights[8] / weights[17] == pytest.approx(math.log(ENET_C + frequency[17]) / math.log(ENET_C + frequency[8]), rel=1e-5)
    assert torch.equal(class_weights(counts, "none"), torch.ones(NUM_LABELS))


def test_shapes_and_compression_ratio():
    torch.manual_seed(0)
    vae = OccVAE(**SMALL)
    semantics = torch.randint(0, NUM_LABELS, (2, 3, 16, 24, 4))
    out = vae(semantics)
    assert out.latent_dist.mean.shape == (2, 3, 3, 4, 6) == (2, 3, *vae.latent_shape())
    assert out.logits.shape == (2, 3, NUM_LABELS, 16, 24, 4)
    assert vae.config.compression_ratio == pytest.approx(16 * 24 * 4 / (3 * 4 * 6))
    # crops of the grid go through too (training), and a clip of another length decodes
    assert vae(semantics[:, :1, :8, :12]).logits.shape == (2, 1, NUM_LABELS, 8, 12, 4)
    paper = OccVAE(**MODEL_CONFIGS["paper"])
    assert paper.latent_shape() == (4, 50, 50) and paper.config.compression_ratio == 64
    assert OccVAE(**{**MODEL_CONFIGS["paper"], "latent_channels": 2, "downsample_factor": 8}).config.compression_ratio == 512
    loss, parts = vae_loss(out.logits, semantics, out.latent_dist, torch.ones(NUM_LABELS), 1.0, 1e-3)
    loss.backward()
    assert set(parts) == {"ce", "lovasz", "kl"} and all(np.isfinite(list(parts.values())))


def test_constructor_and_input_errors():
    with pytest.raises(ValueError, match="downsample_factor 6"):
        OccVAE(**{**SMALL, "downsample_factor": 6})
    with pytest.raises(ValueError, match="compression_ratio 10"):
        OccVAE(**{**SMALL, "compression_ratio": 10})
    vae = OccVAE(**SMALL)
    with pytest.raises(ValueError, match="Z must be 4"):
        vae.encode(torch.zeros(1, 1, 16, 24, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="multiples of 4"):
        vae.encode(torch.zeros(1, 1, 18, 24, 4, dtype=torch.long))


def test_whole_scene_clips():
    assert clip_starts(3, 5) == [0]
    assert clip_starts(10, 5) == [0, 5]
    assert clip_starts(12, 5) == [0, 5, 7]
    torch.manual_seed(0)
    vae = OccVAE(**SMALL).eval()
    semantics = torch.randint(0, NUM_LABELS, (12, 16, 24, 4))
    latents = encode_frames(vae, semantics, batch_frames=5)
    torch.testing.assert_close(latents, vae.encode(semantics[None]).latent_dist.mean[0])
    labels = decode_scene(vae, latents, clip_frames=5, batch_clips=2)
    # frames 0-9 from the clips [0, 5) and [5, 10), frames 10-11 from the last clip [7, 12)
    with torch.no_grad():
        expected = torch.cat([vae.decode(latents[None, 0:5]).logits.argmax(2)[0], vae.decode(latents[None, 5:10]).logits.argmax(2)[0],
                              vae.decode(latents[None, 7:12]).logits.argmax(2)[0, 3:]])
    assert torch.equal(labels, expected.to(torch.uint8))
