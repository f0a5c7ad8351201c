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
