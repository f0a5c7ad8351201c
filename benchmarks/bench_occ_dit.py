"""Benchmark the occupancy DiT: training throughput and sampling time per 5-frame clip, and one whole scene.

With untrained weights (speed does not depend on them), at the paper size on CUDA (hidden 512,
depth 12, 16 heads, patch 2 over 4 x 50 x 50 latents; the paper OccVAE for decoding) and the
tiny size on the CPU. Prints one JSON object per line (and appends it to --out):
- train: clips/s of the diffusion loss step (bf16 autocast on CUDA, AdamW), peak memory;
- sample: seconds per clip with classifier-free guidance (the network runs on cond + uncond in
  one batch) for each sampler:steps, eager and with torch.compile (--compile: default mode;
  --cuda-graphs: mode reduce-overhead), and per clip when B independent clips share a batch;
- decode: the VAE's decode of one clip; scene: a whole --scene-seconds scene at 12 Hz, chained.

    python benchmarks/bench_occ_dit.py --out $OUT/occ_dit.jsonl [--size paper] [--compile] [--cuda-graphs]
"""

import argparse
import json

import torch

from uniscene.models.occ_dit.network import MODEL_CONFIGS, OccDiT
from uniscene.models.occ_dit.pipeline import OccGenPipeline, sampler_scheduler, training_scheduler
from uniscene.models.occ_dit.settings import OccDiTTraining
from uniscene.models.occ_dit.train import make_loss_fn
from uniscene.models.occ_vae.network import MODEL_CONFIGS as VAE_CONFIGS
from uniscene.models.occ_vae.network import OccVAE
from uniscene.timing import StepTimes, seconds_per_call

SIZES = {  # (grid, latent channels of the VAE) by size
    "paper": ((200, 200, 16), 4),
    "tiny": ((200, 200, 16), 8),
    "test": ((32, 32, 4), 4),  # the CPU check of this script (tests/test_occ_dit.py)
}
FRAME_HZ = 12



def build(size: str, device: str, clip_frames: int):
    grid, channels = SIZES[size]
    vae_config = {**VAE_CONFIGS["paper" if size == "paper" else "tiny"], "latent_channels": channels}
    if size == "test":
        vae_config.update(base_channels=8, channel_multipliers=(1, 1), attention_heads=2, norm_num_groups=4, patch_size=1)
    vae = OccVAE(grid_shape=grid, **vae_config).to(device).eval()
    latent = vae.latent_shape()
    dit_config = dict(MODEL_CONFIGS["paper" if size == "paper" else "tiny"])
    if size == "test":
        dit_config.update(hidden_size=32, depth=2, num_heads=2)
    network = OccDiT(in_channels=latent[0], sample_size=latent[1:], num_frames=clip_frames, **dit_config).to(device)
    return vae, network, latent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), help="default: paper on CUDA, tiny on the CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="JSON-lines file to append every record to")
    parser.add_argument("--clip-frames", type=int, default=5)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--samplers", nargs="+", default=["ddim:50", "dpmsolver++:20", "dpmsolver++:15", "dpmsolver++:10"])
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--batch-clips", type=int, nargs="*", default=[4], help="also time B clips sampled in one batch")
    parser.add_argument("--compile", action="store_true", help="also time the network under torch.compile")
    parser.add_argument("--cuda-graphs", action="store_true", help="also time torch.compile(mode='reduce-overhead'): CUDA graphs")
    parser.add_argument("--scene-seconds", type=float, default=20.0, help="whole scene to generate (0: skip)")
    parser.add_argument("--scene-sampler", default="dpmsolver++:15")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = args.device
    size = args.size or ("paper" if device == "cuda" else "tiny")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    autocast = device == "cuda"
    torch.manual_seed(0)
    vae, network, latent = build(size, device, args.clip_frames)
    grid = vae.config.grid_shape
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    params = sum(p.numel() for p in network.parameters())

    def emit(what, value, unit, **extra):
        record = {"bench": "occ_dit", "device": name, "size": size, "what": what, "value": round(float(value), 5), "unit": unit,
                  "params_m": round(params / 1e6, 2), "latent": list(latent), "clip_frames": args.clip_frames, **extra}
        print(json.dumps(record), flush=True)
        if args.out:
            with open(args.out, "a") as file:
                file.write(json.dumps(record) + "\n")

    # 1. training throughput: the real loss step on random latents and layouts
    settings = OccDiTTraining(model=size, clip_frames=args.clip_frames, context_frames=1, crop_latent=0, steps=1,
                              batch_size=args.train_batch, learning_rate=1e-4, ema_decay=0.0, prediction_type="v_prediction",
                              layout_dropout=0.1, context_share=0.5, meta_dropout=0.5)
    loss_fn = make_loss_fn(training_scheduler(), settings, torch.Generator().manual_seed(0))
    batch = {"latents": torch.randn(args.train_batch, args.clip_frames, *latent, device=device),
             "layout": torch.rand(args.train_batch, args.clip_frames, 18, *latent[1:], device=device),
             "meta": torch.rand(args.train_batch, 4, device=device)}
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    network.train()

    def train_step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss, _ = loss_fn(network, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = seconds_per_call(train_step, device, args.train_steps, warmup=2)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    emit("train clips/s (5-frame clips, loss step: forward + backward + AdamW)", args.train_batch / seconds, "clips/s",
         batch=args.train_batch, frames_per_s=round(args.train_batch * args.clip_frames / seconds, 2), peak_gib=round(peak, 2))
    network.eval()
    del optimizer
    if device == "cuda":
        torch.cuda.empty_cache()

    # 2. sampling one clip (and B clips at once), eager and compiled
    pipeline = OccGenPipeline(vae=vae, transformer=network, scheduler=sampler_scheduler(training_scheduler().config, "ddim"))
    pipeline.set_progress_bar_config(disable=True)
    variants = [("eager", network)]
    if args.compile:
        variants.append(("torch.compile", torch.compile(network)))
    if args.cuda_graphs:
        variants.append(("torch.compile reduce-overhead (CUDA graphs)", torch.compile(network, mode="reduce-overhead")))
    for label, module in variants:
        pipeline.transformer = module
        for spec in args.samplers:
            sampler, steps = spec.split(":")
            pipeline.scheduler = sampler_scheduler(pipeline.scheduler.config, sampler)
            for clips in [1, *args.batch_clips]:
                noise = torch.randn(clips, args.clip_frames, *latent, device=device)
                context = noise[:, :1]
                layout = torch.rand(clips, args.clip_frames, 18, *latent[1:], device=device)
                with torch.inference_mode():
                    run = lambda: pipeline.denoise(noise, context, layout, None, int(steps), args.guidance, autocast=autocast)
                    seconds = seconds_per_call(run, device, args.repeats, warmup=2 if label != "eager" else 1)
                emit(f"sample {sampler} {steps} steps, guidance {args.guidance}, {label}", seconds / clips, "s/clip",
                     clips_per_batch=clips, sampler=sampler, steps=int(steps), mode=label)
    pipeline.transformer = network

    # 3. decoding a clip, and a whole scene
    with torch.inference_mode():
        latents = torch.randn(1, args.clip_frames, *latent, device=device)
        seconds = seconds_per_call(lambda: pipeline.decode(latents), device, args.repeats)
        emit("VAE decode + arg-max of one clip", seconds, "s/clip", grid=list(grid))
        if args.scene_seconds > 0:
            frames = int(round(args.scene_seconds * FRAME_HZ)) + 1
            sampler, steps = args.scene_sampler.split(":")
            pipeline.scheduler = sampler_scheduler(pipeline.scheduler.config, sampler)
            layout = torch.rand(frames, 18, *grid[:2]) < 0.1
            times = StepTimes(device)
            with times.step("scene"):
                output = pipeline(layout, num_inference_steps=int(steps), guidance_scale=args.guidance,
                                  generator=torch.Generator().manual_seed(0), progress=False)
            seconds = times.seconds["scene"]
            clips = int(output.clip_of_frame.max()) + 1
            emit(f"whole {args.scene_seconds:g} s scene ({frames} frames, {clips} chained clips, {sampler} {steps} steps, "
                 f"VAE decode included)", seconds, "s", frames=frames, clips=clips, sampler=sampler, steps=int(steps))


if __name__ == "__main__":
    main()
