"""OccDiT and OccGenPipeline on tiny sizes: shapes, adaLN-Zero, null layout, crops, guidance, clip chaining,
save/load, same seed same bytes, and the training loss's context mask."""

import numpy as np
import pytest
import torch

from uniscene.classes import FREE, OCC_CLASS_ID
from uniscene.models.clips import clip_starts
from uniscene.models.occ_dit.network import OccDiT
from uniscene.models.occ_dit.pipeline import (OccGenPipeline, occupancy_meta, sampler_scheduler,
                                              training_scheduler)
from uniscene.models.occ_vae.network import OccVAE

GRID = (16, 16, 4)


def tiny_network(**changes) -> OccDiT:
    config = dict(in_channels=4, sample_size=(4, 4), num_frames=3, context_frames=1, hidden_size=32, depth=2, num_heads=2,
                  patch_size=2, mlp_ratio=2.0)
    return OccDiT(**{**config, **changes})


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn at random (the zero-initialised ones too), so that every path carries signal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return module


def tiny_pipeline(seed: int = 0, sampler: str = "ddim") -> OccGenPipeline:
    torch.manual_seed(seed)
    vae = OccVAE(grid_shape=GRID, embed_dim=2, base_channels=8, channel_multipliers=(1, 1), layers_per_block=1,
                 latent_channels=4, downsample_factor=4, attention_heads=2, norm_num_groups=4).eval()
    network = randomise(tiny_network(), seed).eval()
    pipeline = OccGenPipeline(vae=vae, transformer=network, scheduler=sampler_scheduler(training_scheduler().config, sampler))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def random_layout(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((frames, 18, GRID[0], GRID[1])) < 0.2


def test_network_shapes_and_adaln_zero_init():
    network = tiny_network()
    sample = torch.randn(2, 3, 4, 4, 4)
    layout = torch.rand(2, 3, 18, 16, 16)
    out = network(sample, torch.tensor([10, 900]), layout).sample
    assert out.shape == (2, 3, 4, 4, 4)
    assert torch.count_nonzero(out) == 0  # adaLN-Zero: every modulation and the output projection start at zero
    for block in network.blocks:  # the gates and shifts are what start at zero ...
        assert torch.count_nonzero(block.adaLN_modulation[-1].weight) == 0
    randomise(network)
    out = network(sample, torch.tensor([10, 900]), layout).sample
    assert torch.count_nonzero(out) == out.numel()  # ... and once trained the output carries signal
    assert network.blocks[0].temporal is False and network.blocks[1].temporal is True


def test_temporal_attention_mixes_frames_and_null_layout_ignores_the_layout():
    network = randomise(tiny_network()).eval()
    sample, layout = torch.randn(1, 3, 4, 4, 4), torch.rand(1, 3, 18, 16, 16)
    timestep = torch.tensor([500])
    base = network(sample, timestep, layout).sample
    changed = sample.clone()
    changed[:, 0] += 1.0
    moved = network(changed, timestep, layout).sample
    assert (moved[:, 1:] - base[:, 1:]).abs().max() > 1e-4  # frame 0 reaches frames 1, 2 through temporal attention
    dropped = torch.tensor([True])
    other_layout = torch.rand(1, 3, 18, 16, 16)
    torch.testing.assert_close(network(sample, timestep, layout, layout_dropped=dropped).sample,
                               network(sample, timestep, other_layout, layout_dropped=dropped).sample)
    assert (network(sample, timestep, other_layout).sample - base).abs().max() > 1e-4


def test_crop_with_offset_sees_the_positions_of_the_whole_frame():
    """A crop's tokens get the positional embedding of where they lie: with spatial attention switched off
    (zero gate), the crop's output equals the whole frame's output at the same cells."""
    network = randomise(tiny_network(sample_size=(8, 8))).eval()
    with torch.no_grad():
        for block in network.blocks:
            if not block.temporal:  # gate1 (the third chunk of 6) of every spatial block to zero
                dim = network.config.hidden_size
                block.adaLN_modulation[-1].weight[2 * dim:3 * dim] = 0
                block.adaLN_modulation[-1].bias[2 * dim:3 * dim] = 0
    sample, layout = torch.randn(1, 3, 4, 8, 8), torch.rand(1, 3, 18, 8, 8)
    whole = network(sample, torch.tensor([300]), layout).sample
    crop = network(sample[..., 2:6, 4:8], torch.tensor([300]), layout[..., 2:6, 4:8], position_offset=(2, 4)).sample
    torch.testing.assert_close(crop, whole[..., 2:6, 4:8], atol=1e-5, rtol=1e-5)
    shifted = network(sample[..., 2:6, 4:8], torch.tensor([300]), layout[..., 2:6, 4:8]).sample
    assert (shifted - whole[..., 2:6, 4:8]).abs().max() > 1e-4


def test_clip_starts():
    assert clip_starts(3, 5, 1) == [0]
    assert clip_starts(5, 5, 1) == [0]
    assert clip_starts(13, 5, 1) == [0, 4, 8]
    assert clip_starts(14, 5, 1) == [0, 4, 8, 9]  # the last clip ends at the scene's end
    assert clip_starts(12, 4, 0) == [0, 4, 8]
    with pytest.raises(ValueError):
        clip_starts(10, 3, 3)


def test_occupancy_meta_counts_groups():
    semantics = np.full((1, 200, 200, 16), FREE, np.uint8)
    semantics[0, :10, :10, 0] = OCC_CLASS_ID["terrain"]  # 100 voxels
    semantics[0, 20:30, :, 1] = OCC_CLASS_ID["car"]  # 2000 "other" voxels
    meta = occupancy_meta(semantics)
    np.testing.assert_allclose(meta[0], [2000 / 25000, 100 / 7000, 0, 0], rtol=1e-6)


def test_guidance_is_the_conditional_direction_scaled():
    """One DDIM step from pure noise: the pipeline's update equals the one computed by hand from the
    network's conditional and unconditional predictions."""
    pipeline = tiny_pipeline()
    layout = random_layout(3)
    scale = 3.0
    output = pipeline(layout, num_inference_steps=1, guidance_scale=scale, generator=torch.Generator().manual_seed(5))

    noise = torch.randn((1, 3, 4, 4, 4), generator=torch.Generator().manual_seed(5))
    scheduler = pipeline.scheduler
    scheduler.set_timesteps(1)
    t = scheduler.timesteps[0]
    pooled = pipeline.transformer.pool_layout(torch.as_tensor(layout)[None])
    with torch.no_grad():
        conditional = pipeline.transformer(noise, torch.full((1, 3), float(t)), pooled).sample
        unconditional = pipeline.transformer(noise, torch.full((1, 3), float(t)), pooled, layout_dropped=torch.tensor([True])).sample
    expected = scheduler.step(unconditional + scale * (conditional - unconditional), t, noise).prev_sample
    np.testing.assert_allclose(output.latents, expected[0].numpy(), atol=1e-5)
    assert np.abs(output.latents - pipeline(layout, num_inference_steps=1, guidance_scale=1.0,
                                            generator=torch.Generator().manual_seed(5)).latents).max() > 1e-3


def test_clip_chaining_feeds_the_previous_clips_frames_clean():
    pipeline = tiny_pipeline()
    calls = []
    hook = pipeline.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((args[0].clone(), args[1].clone())), with_kwargs=True)
    output = pipeline(random_layout(7), num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    hook.remove()
    assert clip_starts(7, 3, 1) == [0, 2, 4]
    np.testing.assert_array_equal(output.clip_of_frame, [0, 0, 0, 1, 1, 2, 2])
    assert len(calls) == 3 * 3
    for clip, start in enumerate([0, 2, 4]):
        for sample, timestep in calls[3 * clip:3 * clip + 3]:
            assert sample.shape == (2, 3, 4, 4, 4)  # conditional and unconditional in one batch
            if clip == 0:
                assert (timestep > 0).all()
                continue
            assert (timestep[:, 0] == 0).all() and (timestep[:, 1:] > 0).all()  # the context frame at timestep 0 ...
            torch.testing.assert_close(sample[0, 0], torch.from_numpy(output.latents[start]))  # ... clean, as generated before
    assert output.semantics.shape == (7, *GRID) and output.semantics.dtype == np.uint8


def test_save_load_round_trip_and_same_seed_same_bytes(tmp_path):
    pipeline = tiny_pipeline(sampler="dpmsolver++")
    layout = random_layout(5)
    first = pipeline(layout, num_inference_steps=4, generator=torch.Generator().manual_seed(1))
    again = pipeline(layout, num_inference_steps=4, generator=torch.Generator().manual_seed(1))
    other = pipeline(layout, num_inference_steps=4, generator=torch.Generator().manual_seed(2))
    assert first.latents.tobytes() == again.latents.tobytes() and first.semantics.tobytes() == again.semantics.tobytes()
    assert first.latents.tobytes() != other.latents.tobytes()

    pipeline.save_pretrained(tmp_path / "pipe")
    assert {p.name for p in (tmp_path / "pipe").iterdir()} >= {"vae", "transformer", "scheduler", "model_index.json"}
    loaded = OccGenPipeline.from_pretrained(tmp_path / "pipe", low_cpu_mem_usage=False)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler).__name__ == "DPMSolverMultistepScheduler"
    reloaded = loaded(layout, num_inference_steps=4, generator=torch.Generator().manual_seed(1))
    assert reloaded.latents.tobytes() == first.latents.tobytes() and reloaded.semantics.tobytes() == first.semantics.tobytes()


class _Interrupted(Exception):
    pass


def test_training_resumed_ends_where_an_uninterrupted_run_does(tmp_path):
    """The DiT loss (its own draws from the checkpointed generator) on uniscene.training: killed after step 5
    (checkpoint at 4), rerun from fresh weights, it ends with the uninterrupted run's weights bit for bit."""
    from uniscene.models.occ_dit.settings import OccDiTTraining
    from uniscene.models.occ_dit.train import ClipDataset, SceneClips, latent_statistics, make_loss_fn
    from uniscene.training import Trainer, TrainingConfig

    rng = np.random.default_rng(0)
    scenes = [SceneClips(rng.normal(size=(8, 4, 4, 4)).astype(np.float32), rng.random((8, 18, 4, 4)).astype(np.float16),
                         rng.random((8, 4)).astype(np.float32)) for _ in range(2)]
    dataset = ClipDataset(scenes, 3, *latent_statistics(scenes))
    settings = OccDiTTraining(model="tiny", clip_frames=3, context_frames=1, crop_latent=2, steps=8, batch_size=4,
                              learning_rate=1e-3, ema_decay=0.9, prediction_type="v_prediction", layout_dropout=0.3,
                              context_share=0.5, meta_dropout=0.5)
    config = TrainingConfig(batch_size=4, learning_rate=1e-3, steps=8, ema_decay=0.9, log_every=2, checkpoint_every=4)

    def trainer(work, seed=0, stop_at=None):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(0)
        loss_fn = make_loss_fn(training_scheduler(), settings, generator)
        calls = []

        def counted(model, batch):
            calls.append(1)
            if stop_at is not None and len(calls) == stop_at:
                raise _Interrupted
            return loss_fn(model, batch)

        return Trainer(tiny_network(sample_size=(4, 4)), dataset, counted, config, tmp_path / work, run_hash="r", generator=generator)

    straight = trainer("a")
    history = straight.fit()
    with pytest.raises(_Interrupted):
        trainer("b", stop_at=6).fit()
    resumed = trainer("b", seed=9)
    resumed_history = resumed.fit()
    assert [r["losses"] for r in resumed_history] == [r["losses"] for r in history]
    for a, b in zip(straight.final_model().parameters(), resumed.final_model().parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_benchmark_runs_at_test_size(tmp_path):
    """benchmarks/bench_occ_dit.py end to end on the CPU at its test size: every record written, values positive."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "occ_dit.jsonl"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_occ_dit.py"
    subprocess.run([sys.executable, str(script), "--size", "test", "--device", "cpu", "--train-steps", "1", "--samplers", "ddim:2",
                    "dpmsolver++:2", "--batch-clips", "2", "--scene-seconds", "0.5", "--repeats", "1", "--out", str(out)],
                   check=True, capture_output=True, text=True)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    whats = [r["what"] for r in records]
    assert whats[0].startswith("train clips/s") and whats[-1].startswith("whole 0.5 s scene (7 frames, 2 chained clips")  # clips at 0 and 2
    assert sum(w.startswith("sample ") for w in whats) == 4  # 2 samplers x (1 clip, 2 clips a batch)
    assert all(r["value"] > 0 and r["device"] == "cpu" for r in records)
