"""Scenes cut into clips: the generators and the occupancy VAE see a scene a clip of frames at a time."""


def clip_starts(num_frames: int, clip_frames: int, context_frames: int = 0) -> list:
    """First frame of each clip: clips of `clip_frames` overlapping by `context_frames` (the frames a clip continues
    from), the last one ending at the scene's end; one clip where the scene is no longer than a clip."""
    if not 0 <= context_frames < clip_frames:
        raise ValueError(f"context_frames {context_frames} must be in [0, clip_frames {clip_frames})")
    if num_frames <= clip_frames:
        return [0]
    step = clip_frames - context_frames
    starts = list(range(0, num_frames - clip_frames + 1, step))
    if starts[-1] + clip_frames < num_frames:
        starts.append(num_frames - clip_frames)  # the last clip overlaps more than context_frames
    return starts


def clip_windows(scene_lengths, clip_frames: int) -> list:
    """(scene, first frame) of every window of `clip_frames` consecutive frames of every scene: a training set's clips."""
    windows = [(s, start) for s, length in enumerate(scene_lengths) for start in range(length - clip_frames + 1)]
    if not windows:
        raise ValueError(f"no training scene has clip_frames = {clip_frames} frames")
    return windows
