"""Benchmark the multi-view video model: seconds per 8-frame, 6-camera clip, peak memory, training throughput.

With untrained weights (speed does not depend on them) and random conditions. Sizes: paper (256 x
512 images, the paper UNet of ~280 M parameters + a ~10 M adapter, 8x autoencoder, 32 x 64 latents;
for GPUs), tiny (the default config's 96 x 160) and test (32 x 64, 2 frames: the CPU check of this
script, tests/test_video_bench.py). For cross-view attention on and off it prints one JSON object per
line (and appends it to --out):
- params: parameters of the UNet, the adapter and the autoencoder;
- flops: TFLOP of one clip's sampling (--steps guided steps, the adapter's condition encoding once), counted by
  torch.utils.flop_counter on one conditional forward with attention through the math backend, so that its
  matrix products count (device-independent; `--flops-only` stops there: the paper size on a CPU in ~1 min);
- sample: seconds per clip of --steps DPM-Solver++ steps with classifier-free guidance (the
  network on conditional + unconditional in one batch of 2 x 6 cameras x F frames), without and
  with the autoencoder's decode of the clip's 6 x F images, peak GPU memory; eager, then under
  torch.compile where --compile (default on CUDA);
- train: clips/s (and images/s) of the training step (v-prediction loss, AdamW, bf16 autocast on
  CUDA, gradient checkpointing at the paper size), peak memory.
On CUDA the weights are bf16 (--dtype) under autocast and attention runs through PyTorch's SDPA
(diffusers' AttnProcessor2_0 and CrossViewAttention). One command, under 8 minutes on an H100:

    python benchmarks/bench_video.py --out $OUT/video.jsonl            # paper on CUDA, tiny on the CPU
"""

import argparse
import json
import time
import traceback

import torch

from uniscene.models.video import network
from uniscene.models.video.network import (BOX_FEATURES, CAMERA_FEATURES, MultiViewVideoModel, VideoConditions, autoencoder,
                                           build_adapter, spatio_temporal_unet)
from uniscene.models.video.pipeline import MultiViewVideoPipeline, sampler_scheduler, training_scheduler
from uniscene.models.video.settings import VideoTraining
from uniscene.models.video.train import make_loss_fn
from uniscene.settings import default_settings
from uniscene.timing import seconds_per_call

SIZES = {  # model config, image size, frames per clip
    "paper": ("paper", (256, 512), 8),
    "tiny": ("tiny", (96, 160), 8),
    "test": ("tiny", (32, 64), 2),
}
VIEWS = 6
MAX_BOXES = 16



def random_conditions(batch: int, frames: int, size_hw, device) -> VideoConditions:
    g = torch.Generator().manual_seed(0)
    return VideoConditions(
        context_mask=torch.zeros(batch, frames, dtype=torch.bool),
        semantic=torch.randint(0, 21, (batch, VIEWS, frames, *size_hw), generator=g).to(torch.uint8).masked_fill_(
            torch.rand(batch, VIEWS, frames, *size_hw, generator=g) < 0.3, 255),
        depth=torch.rand(batch, VIEWS, frames, *size_hw, generator=g),
        cameras=torch.randn(batch, VIEWS, frames, CAMERA_FEATURES, generator=g),
        boxes=torch.randn(batch, VIEWS, frames, MAX_BOXES, BOX_FEATURES, generator=g),
        box_valid=torch.rand(batch, VIEWS, frames, MAX_BOXES, generator=g) < 0.5,
        dropped=torch.zeros(batch, dtype=torch.bool)).to(device)


def profile_ops(call, top: int = 25) -> list:
    """[(operator, self device ms, calls)] of one `call` under torch.profiler, the most expensive first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as recorded:
        call()
        torch.cuda.synchronize()
    events = sorted(recorded.key_averages(), key=lambda e: e.self_device_time_total, reverse=True)
    total = sum(e.self_device_time_total for e in events) / 1e3
    return [("all operators", round(total, 1), 0)] + [(e.key[:80], round(e.self_device_time_total / 1e3, 2), e.count) for e in events[:top]]


def clip_tflops(model: MultiViewVideoModel, shape: tuple, conditions: VideoConditions, steps: int) -> float:
    """TFLOP of sampling one clip: `steps` guided steps (conditional + unconditional: two forwards of the clip's V x F
    latents of `shape`), after encoding the conditions once."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    sample = torch.zeros(shape, device=conditions.semantic.device)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as encoding:
            encoded = model.encode_conditions(conditions)
        with FlopCounterMode(display=False) as forward:
            model(sample, torch.tensor([500.0], device=sample.device), sample, encoded)
    return (encoding.get_total_flops() + 2 * steps * forward.get_total_flops()) / 1e12


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), help="default: paper on CUDA, tiny on the CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="JSON-lines file to append every record to")
    parser.add_argument("--steps", type=int, default=25, help="sampling steps per clip")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], help="weights on CUDA (default bf16; the CPU runs fp32)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, help="also time torch.compile (default: on CUDA)")
    parser.add_argument("--train-batch", type=int, default=1, help="clips (of 6 cameras) per training step")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cross-view", choices=["both", "on", "off"], default="both")
    parser.add_argument("--profile", action="store_true", help="also record where one eager clip's sampling spends its GPU time")
    parser.add_argument("--flops-only", action="store_true", help="print the parameters and FLOPs, time nothing")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    size = args.size or ("paper" if cuda else "tiny")
    model_name, size_hw, frames = SIZES[size]
    dtype = torch.bfloat16 if cuda and (args.dtype or "bf16") == "bf16" else torch.float32
    compile_too = cuda if args.compile is None else args.compile
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    base = {"bench": "video", "size": size, "device": device_name, "image_size": list(size_hw), "frames": frames, "views": VIEWS,
            "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__}

    def emit(record: dict) -> None:
        line = json.dumps({**base, **record})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as file:
                file.write(line + "\n")

    vae = autoencoder(model_name).to(args.device, dtype).eval().requires_grad_(False)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_hw = tuple(s // factor for s in size_hw)
    for cross_view in {"both": (True, False), "on": (True,), "off": (False,)}[args.cross_view]:
        try:
            torch.manual_seed(0)
            unet = spatio_temporal_unet(model_name, vae.config.latent_channels, frames)
            adapter = build_adapter(unet, model_name, cross_view, size_hw, factor, frames, 1, MAX_BOXES)
            count = lambda m: sum(p.numel() for p in m.parameters())
            params = {"unet": count(unet), "adapter": count(adapter), "vae": count(vae)}
            emit({"what": "params", "cross_view": cross_view, **params, "denoiser": params["unet"] + params["adapter"]})
            model = MultiViewVideoModel(unet, adapter).to(args.device)
            shape = (1, VIEWS, frames, vae.config.latent_channels, *latent_hw)
            tflops = clip_tflops(model, shape, random_conditions(1, frames, size_hw, args.device), args.steps)
            emit({"what": "flops", "cross_view": cross_view, "steps": args.steps, "tflop_per_clip": float(f"{tflops:.4g}")})
            if args.flops_only:
                continue

            # 1. training step (fp32 master weights, bf16 autocast on CUDA)
            model = model.train()
            model.gradient_checkpointing = size == "paper"
            settings = default_settings(VideoTraining, clip_frames=frames, context_frames=1)
            loss_fn = make_loss_fn(training_scheduler(), settings, torch.Generator().manual_seed(0))
            conditions = random_conditions(args.train_batch, frames, size_hw, args.device)
            batch = {"latents": torch.randn(args.train_batch, VIEWS, frames, vae.config.latent_channels, *latent_hw, device=args.device),
                     **{name: getattr(conditions, name) for name in ("semantic", "depth", "cameras", "boxes", "box_valid")}}
            optimiser = torch.optim.AdamW(model.parameters(), lr=1e-5)

            def train_step():
                with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=cuda):
                    loss, _ = loss_fn(model, batch)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()

            reset_peak(args.device)
            seconds = seconds_per_call(train_step, args.device, args.train_steps)
            emit({"what": "train", "cross_view": cross_view, "batch_clips": args.train_batch, "seconds_per_step": round(seconds, 4),
                  "clips_per_s": round(args.train_batch / seconds, 3), "images_per_s": round(args.train_batch * VIEWS * frames / seconds, 2),
                  "gradient_checkpointing": model.gradient_checkpointing, "peak_memory_gib": peak_gib(args.device)})
            del optimiser
            model.zero_grad(set_to_none=True)

            # 2. sampling one clip: steps x (cond + uncond), then the decode of its 6 x F images
            model = model.eval().to(dtype)
            pipeline = MultiViewVideoPipeline(vae=vae, unet=model.unet, adapter=model.adapter,
                                              scheduler=sampler_scheduler(training_scheduler().config, "dpmsolver++"))
            pipeline.set_progress_bar_config(disable=True)
            conditions = random_conditions(1, frames, size_hw, args.device)
            noise = torch.randn(shape, device=args.device)
            context = torch.zeros(shape, device=args.device)
            variants = [("eager", None)] + ([("compiled", "default"), ("compiled, CUDA graphs", "reduce-overhead")] if compile_too else [])
            for label, mode in variants:
                pipeline.compile(mode)
                started = time.perf_counter()
                with torch.no_grad():
                    def sample():
                        return pipeline.denoise(noise, context, conditions, args.steps, args.guidance, autocast=cuda)

                    def sample_and_decode():
                        clean = sample()
                        return pipeline.decode(clean[0].flatten(0, 1), frames)

                    reset_peak(args.device)
                    denoise_s = seconds_per_call(sample, args.device, args.repeats, warmup=2 if mode else 1)
                    total_s = seconds_per_call(sample_and_decode, args.device, args.repeats)
                if args.profile and mode is None:
                    emit({"what": "profile", "cross_view": cross_view, "top_ops": profile_ops(sample)})
                emit({"what": "sample", "cross_view": cross_view, "mode": label, "steps": args.steps, "guidance": args.guidance,
                      "sampler": "dpmsolver++", "seconds_per_clip": round(denoise_s, 4), "seconds_per_clip_with_decode": round(total_s, 4),
                      "seconds_per_frame_all_views": round(total_s / frames, 4), "peak_memory_gib": peak_gib(args.device),
                      "denoiser_params": params["unet"] + params["adapter"], "setup_and_compile_s": round(time.perf_counter() - started, 1)})
            pipeline.compile(None)
            del model, pipeline, unet, adapter
        except Exception as error:  # one failed variant is reported and the rest still runs
            emit({"what": "error", "cross_view": cross_view, "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc()[-2000:]})
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
