"""`uniscene train-segmenter`: train the video metrics' segmentation network on true images and classes.

Reads the synthetic dataset's camera images of the training scenes (--frames) and the truth
store's per-pixel classes (<dataroot>/truth/<scene>.zarr `cam_semantics`); writes
results/models/segmenter/ (save_pretrained: config.json + safetensors; training.json with the
loss history, the image size the network reads and, where --val-frames names held-out scenes,
its pixel accuracy and mIoU on their TRUE images: the ceiling of the video's condition
consistency). `<out>.checkpoint/` holds the checkpoint until the model is in place.
"""

import time
from pathlib import Path

import numpy as np

from uniscene.config import resolve_device
from uniscene.errors import UserError
from uniscene.store import fingerprint

STAGE = "train_segmenter"
HELP = "train the video metrics' segmentation network on the synthetic dataset's true images and classes"


def add_arguments(parser):
    parser.add_argument("--frames", nargs="+", required=True, help="frames.zarr of each training scene")
    parser.add_argument("--val-frames", nargs="*", default=[], help="frames.zarr of the held-out scenes: the network's pixel accuracy "
                        "and mIoU on their true images go into training.json (the ceiling of the video metrics' condition consistency)")
    parser.add_argument("--out", required=True, help="model folder to write (results/models/segmenter)")


def held_out_scores(model, frames_paths, dataroot, size_hw) -> dict:
    """Pixel accuracy and mIoU (occupancy classes present in the truth; sky is a class of the accuracy only) on true images."""
    from uniscene.metrics.render import confusion_matrix, semantic_scores
    from uniscene.models.segmenter.train import load_labelled_images, segment

    data = load_labelled_images(frames_paths, dataroot, size_hw=size_hw)
    predicted = segment(model, data.images)
    confusion = confusion_matrix(data.labels.astype(np.int64), predicted.astype(np.int64))
    scores = semantic_scores(confusion)
    scores["pixel_accuracy_with_sky"] = float(np.trace(confusion) / max(confusion.sum(), 1))
    scores["num_images"] = len(data)
    return scores


def main(args, config):
    if config["dataset"]["kind"] != "synthetic":
        raise UserError("train-segmenter reads the true per-pixel classes that only the synthetic dataset has (dataset.kind: synthetic)")
    import torch

    from uniscene.models.segmenter.network import MODEL_CONFIGS, SegmenterNet
    from uniscene.models.segmenter.settings import SegmenterSettings
    from uniscene.models.segmenter.train import load_labelled_images, segmenter_trainer
    from uniscene.training import seed_everything

    settings = SegmenterSettings.from_config(config)
    dataroot, device, seed = config["dataset"]["dataroot"], resolve_device(config), int(config["seed"])
    out = Path(args.out)
    start = time.perf_counter()
    data = load_labelled_images(args.frames, dataroot, frame_stride=settings.frame_stride, size_hw=settings.image_size)
    size_hw = list(data.images.shape[1:3])
    load_seconds = time.perf_counter() - start
    print(f"train-segmenter: {len(data)} images of {size_hw[0]} x {size_hw[1]} from {len(args.frames)} scenes in {load_seconds:.1f} s")

    seed_everything(seed)
    model = SegmenterNet(**MODEL_CONFIGS[settings.model])
    inputs = {p: fingerprint(p) for p in args.frames}
    run_config = {"settings": settings.as_dict(), "seed": seed, "inputs": inputs, "image_size": size_hw}
    trainer = segmenter_trainer(model, data, steps=settings.steps, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                                seed=seed, device=device, work_dir=out.parent / f"{out.name}.checkpoint", run_config=run_config,
                                crop_hw=settings.crop_size)
    train_start = time.perf_counter()
    history = trainer.fit()
    train_seconds = time.perf_counter() - train_start
    info = {"image_size": size_hw, "num_images": len(data), "settings": settings.as_dict(), "inputs": inputs, "device": device,
            "train_seconds": round(train_seconds, 2), "num_parameters": sum(p.numel() for p in model.parameters())}
    if args.val_frames:
        with torch.no_grad():
            info["held_out_true_images"] = {**held_out_scores(trainer.final_model(), args.val_frames, dataroot, size_hw),
                                            "scenes": [str(p) for p in args.val_frames]}
    info["total_seconds"] = round(time.perf_counter() - start, 2)
    trainer.save_final(out, info=info)
    ceiling = info.get("held_out_true_images", {})
    print(f"train-segmenter: wrote {out} in {info['total_seconds']:.1f} s ({train_seconds:.1f} s training); last "
          f"{history[-1]['losses'] if history else '-'}; held-out true images: pixel accuracy {ceiling.get('pixel_accuracy', '-')}, "
          f"mIoU {ceiling.get('miou', '-')}")
