"""The generative half at the paper sizes, trained and scored end to end through the `uniscene` commands.

On a GPU machine, in one call: a larger synthetic dataset (the GPU preset of bench_occ_vae.py:
--scenes scenes of --duration-s seconds, the last --val-scenes held out), then per scene the
commands of the workflow (frames, layout, occ-label, several scenes at once), then the paper-size
occupancy VAE (`train-occ-vae`, `eval-occ-vae` on the held-out labels), the paper-size DiT
(`train-occ-dit`), the evaluation-only autoencoder (`train-occ-eval-ae`), the generated chain of
each held-out scene (`occ-gen`, default sampler; DDIM 50 and the two leaks on the first eval_frames, apart)
and `metrics occ_gen`. Training lengths are steps (--vae-steps, --dit-steps), sized for one 10-minute
call on an H100. Generation reads only the layouts of the held-out scenes (the default, leak-free).
Prints one JSON object per line (and appends them to --out): each command's wall seconds, then
the contents of occ_vae.json and occ_gen.json.

    python benchmarks/bench_generated_chain.py --workdir /tmp/chain --out $OUT/chain.jsonl
    python benchmarks/bench_generated_chain.py --workdir /tmp/chain --size tiny --device cpu --scenes 3 --val-scenes 1 \
        --duration-s 1.5 --vae-steps 5 --dit-steps 5 --eval-ae-steps 5 --parallel 1   # a CPU smoke run
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_occ_vae import SYNTH_PRESET

from uniscene.config import defaults


def paper_config(root: Path, args) -> dict:
    """The default config with the GPU preset dataset and the paper sizes of the generative models."""
    config = defaults()
    config["device"] = args.device
    config["dataset"].update({"dataroot": str(root), "val_scenes": [f"synth-{i:04d}" for i in range(args.scenes - args.val_scenes, args.scenes)]})
    config["synth"].update({**SYNTH_PRESET, "num_scenes": args.scenes, "duration_s": args.duration_s, "workers": 0})
    if args.size == "tiny":  # a CPU smoke run: the demo's model settings
        config["occ_vae"]["steps"], config["occ_dit"]["steps"], config["occ_eval_ae"]["steps"] = args.vae_steps, args.dit_steps, args.eval_ae_steps
        return config
    config["occ_vae"].update({"model": "paper", "clip_frames": 5, "batch_size": 4, "crop_cells": 0, "steps": args.vae_steps,
                              "learning_rate": 1e-3, "lovasz_voxels": 0, "num_workers": 8, "eval_batch": 4})
    config["occ_dit"].update({"model": "paper", "crop_latent": 0, "batch_size": 8, "steps": args.dit_steps, "learning_rate": 3e-4})
    config["occ_eval_ae"].update({"steps": args.eval_ae_steps})
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="where the dataset, stores and models go")
    parser.add_argument("--out", help="JSON lines file to append to")
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--val-scenes", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--vae-steps", type=int, default=440, help="about 140 s of the paper VAE on an H100 (4 clips of 5 frames a step)")
    parser.add_argument("--dit-steps", type=int, default=1200, help="about 120 s of the paper DiT on an H100 (8 clips a step)")
    parser.add_argument("--eval-ae-steps", type=int, default=300)
    parser.add_argument("--size", choices=["paper", "tiny"], default="paper", help="tiny: the demo's models (a CPU smoke run)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parallel", type=int, default=4, help="scenes whose per-scene commands run at once")
    args = parser.parse_args()
    work = Path(args.workdir)
    root, scenes_dir, models, metrics = work / "synthetic", work / "scenes", work / "models", work / "metrics"
    for folder in (scenes_dir, models, metrics):
        folder.mkdir(parents=True, exist_ok=True)
    config_file = work / "config.json"
    config_file.write_text(json.dumps(paper_config(root, args)))
    names = [f"synth-{i:04d}" for i in range(args.scenes)]
    train, held_out = names[:-args.val_scenes], names[-args.val_scenes:]
    device = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"], capture_output=True, text=True).stdout.strip()

    def emit(record: dict) -> None:
        line = json.dumps({"bench": "generated_chain", "device": device, **record})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as file:
                file.write(line + "\n")

    def uniscene(*command, what: str) -> float:
        """Run one command (its output in work/logs/<what>.log); its wall seconds."""
        log = work / "logs" / f"{what.replace(' ', '_').replace('/', '_')}.log"
        log.parent.mkdir(exist_ok=True)
        began = time.perf_counter()
        with open(log, "w") as handle:
            done = subprocess.run([sys.executable, "-m", "uniscene.cli", command[0], "--config", str(config_file), *map(str, command[1:])],
                                  stdout=handle, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - began
        emit({"what": what, "seconds": round(seconds, 1), "exit_status": done.returncode})
        if done.returncode != 0:
            print(log.read_text()[-3000:], file=sys.stderr)
            raise SystemExit(f"{what} failed")
        return seconds

    def store(scene: str, kind: str) -> Path:
        return scenes_dir / scene / f"{kind}.zarr"

    uniscene("synth", "--out", root, what="synth")

    def per_scene(scene: str) -> None:
        uniscene("frames", "--scene", scene, "--out", store(scene, "frames"), what=f"frames {scene}")
        uniscene("layout", "--frames", store(scene, "frames"), "--out", store(scene, "layout"), what=f"layout {scene}")
        uniscene("occ-label", "--frames", store(scene, "frames"), "--out", store(scene, "occ_label"), what=f"occ-label {scene}")

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(per_scene, names))
    labels = lambda chosen: [store(s, "occ_label") for s in chosen]
    uniscene("train-occ-vae", "--occupancy", *labels(train), "--out", models / "occ_vae", what="train-occ-vae (paper)")
    uniscene("eval-occ-vae", "--model", models / "occ_vae", "--occupancy", *labels(held_out), "--out", metrics / "occ_vae.json",
             what="eval-occ-vae")
    uniscene("train-occ-dit", "--vae", models / "occ_vae", "--occupancy", *labels(train), "--layout", *[store(s, "layout") for s in train],
             "--out", models / "occ_dit", what="train-occ-dit (paper)")
    uniscene("train-occ-eval-ae", "--occupancy", *labels(train), "--out", models / "occ_eval_ae", what="train-occ-eval-ae")
    eval_frames = paper_config(root, args)["occ_dit"]["eval_frames"]
    for scene in held_out:
        gen = scenes_dir / scene / "gen"
        uniscene("occ-gen", "--model", models / "occ_dit", "--layout", store(scene, "layout"), "--out", gen / "occ_gen.zarr",
                 what=f"occ-gen {scene} (whole scene, default sampler)")
        uniscene("occ-gen", "--model", models / "occ_dit", "--layout", store(scene, "layout"), "--out", gen / "variants" / "ddim50.zarr",
                 "--frames", f"0:{eval_frames}", "--sampler", "ddim", "--steps", 50, what=f"occ-gen {scene} (DDIM 50, first frames)")
        for leak in ("leak_noise_prior", "leak_meta"):  # the reference's leaks, scored apart: they read the scene's labels
            uniscene("occ-gen", "--model", models / "occ_dit", "--layout", store(scene, "layout"), "--out", gen / "variants" / f"{leak}.zarr",
                     "--frames", f"0:{eval_frames}", f"--{leak.replace('_', '-')}", "--labels", store(scene, "occ_label"),
                     what=f"occ-gen {scene} ({leak}, first frames)")
    of = lambda path: [scenes_dir / s / path for s in held_out]
    uniscene("metrics", "occ_gen", "--frames", *of("frames.zarr"), "--layout", *of("layout.zarr"), "--occ-label", *of("occ_label.zarr"),
             "--occ-gen", *of("gen/occ_gen.zarr"), "--occ-gen-ddim50", *of("gen/variants/ddim50.zarr"),
             "--occ-gen-leak-noise-prior", *of("gen/variants/leak_noise_prior.zarr"), "--occ-gen-leak-meta", *of("gen/variants/leak_meta.zarr"),
             "--occ-eval-ae", models / "occ_eval_ae", "--out", metrics / "occ_gen.json", what="metrics occ_gen")
    for name in ("occ_vae", "occ_gen"):
        emit({"what": f"{name}.json", "metrics": json.loads((metrics / f"{name}.json").read_text())})
    for name in ("occ_vae", "occ_dit"):
        history = models / name / "history.jsonl"
        if history.is_file():
            lines = history.read_text().splitlines()
            emit({"what": f"{name} training history (first, last)", "first": json.loads(lines[0]), "last": json.loads(lines[-1])})


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
