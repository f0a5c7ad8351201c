"""Six-camera video as one MP4: the views tiled in the nuScenes arrangement, H.264 through PyAV (its wheel bundles libx264).

Tiles: the top row FRONT_LEFT, FRONT, FRONT_RIGHT; the bottom row BACK_RIGHT, BACK, BACK_LEFT, so
that reading left to right, top then bottom, goes once round the car (`TILE_ROWS`). yuv420p needs
even sizes: an odd mosaic is padded by a black row or column.

Letters: T frames, V cameras, H W pixels of one view.
"""

from pathlib import Path

import numpy as np

from uniscene.sensors import CAMERA_NAMES

TILE_ROWS = (("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"), ("CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT"))
FPS = 12  # the frames' rate


def tile_views(views: np.ndarray, camera_names=CAMERA_NAMES) -> np.ndarray:
    """views [V, H, W, 3] uint8 in `camera_names` order -> the mosaic [2 H (+1), 3 W (+1), 3] (even sides)."""
    index = {name: i for i, name in enumerate(camera_names)}
    missing = [name for row in TILE_ROWS for name in row if name not in index]
    if missing:
        raise ValueError(f"tile_views needs the six nuScenes cameras, {missing} missing from {list(camera_names)}")
    mosaic = np.concatenate([np.concatenate([views[index[name]] for name in row], 1) for row in TILE_ROWS], 0)
    pad = ((0, mosaic.shape[0] % 2), (0, mosaic.shape[1] % 2), (0, 0))
    return np.pad(mosaic, pad) if any(p[1] for p in pad) else mosaic


class Mp4Writer:
    """Write frames of six views as an H.264 MP4 (yuv420p, `fps` frames per second), frame by frame.

        with Mp4Writer(path) as mp4:
            for rgb in clips:              # [F, V, H, W, 3] uint8
                mp4.write(rgb)

    The file is written to a temporary sibling and renamed when the block ends without error.
    """

    def __init__(self, path, camera_names=CAMERA_NAMES, fps: int = FPS, crf: int = 18):
        self.path, self.camera_names, self.fps, self.crf = Path(path), tuple(camera_names), fps, crf
        self.frames = 0

    def __enter__(self):
        import av

        from uniscene.store import _tmp_sibling

        self._tmp = _tmp_sibling(self.path, ".mp4")
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        self._stream = None
        return self

    def write(self, rgb: np.ndarray) -> None:
        """rgb [F, V, H, W, 3] uint8: F more frames."""
        import av

        for views in rgb:
            mosaic = tile_views(views, self.camera_names)
            if self._stream is None:
                self._stream = self._container.add_stream("libx264", rate=self.fps)
                self._stream.height, self._stream.width = mosaic.shape[:2]
                self._stream.pix_fmt = "yuv420p"
                self._stream.options = {"crf": str(self.crf)}
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(mosaic), format="rgb24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames += 1

    def __exit__(self, kind, error, traceback):
        try:
            if kind is None and self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()
        if kind is None:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)
        return False


def write_mp4(path, rgb: np.ndarray, camera_names=CAMERA_NAMES, fps: int = FPS) -> Path:
    """rgb [T, V, H, W, 3] uint8 -> an MP4 at `path` (Mp4Writer)."""
    with Mp4Writer(path, camera_names, fps) as mp4:
        mp4.write(rgb)
    return Path(path)
