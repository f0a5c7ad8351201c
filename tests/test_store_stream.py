"""uniscene.store.StoreWriter: streamed stores equal whole writes, failures leave nothing, memory stays bounded;
and the render and occ_label commands, which stream, write what the unstreamed code wrote."""

import copy
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from store_examples import example_dataset
from uniscene import store
from uniscene.errors import UserError
from uniscene.store_layouts import LAYOUTS, LayoutError

STREAMED_STAGES = sorted(stage for stage, layout in LAYOUTS.items() if any("frame" in v.dims for v in layout.variables.values()))


def write_whole(path, dataset, stage, **kwargs):
    return store.write_store(path, dataset, stage=stage, config_subset={}, **kwargs)


def frame_parts(dataset, sizes):
    """`dataset`'s frame variables cut into consecutive batches of `sizes` frames, as {name: array} mappings."""
    names = [name for name, var in dataset.data_vars.items() if "frame" in var.dims]
    edges = np.cumsum([0, *sizes])
    return [{name: dataset[name].values[a:b] for name in names} for a, b in zip(edges[:-1], edges[1:])]


def stream(path, dataset, stage, sizes, frame_chunk=1, num_frames="known", **kwargs):
    """Write `dataset` through StoreWriter: a template without frames, then the frames in batches of `sizes`."""
    total = dataset.sizes["frame"] if num_frames == "known" else None
    with store.StoreWriter(path, dataset.isel(frame=slice(0, 0)), stage=stage, config_subset={}, frame_chunk=frame_chunk,
                           num_frames=total, **kwargs) as writer:
        for part in frame_parts(dataset, sizes):
            writer.append(part)
    return path


def chunk_files(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != "zarr.json"}


def assert_same_arrays(a, b):
    a, b = store.open_store(a), store.open_store(b)
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        assert a[name].dims == b[name].dims and a[name].dtype == b[name].dtype, name
        if a[name].dtype.kind in "OUT":
            assert a[name].values.tolist() == b[name].values.tolist(), name
        else:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


@pytest.mark.parametrize("stage", STREAMED_STAGES)
@pytest.mark.parametrize("frame_chunk", [1, 3])
def test_streamed_store_is_byte_identical_to_a_whole_write(tmp_path, stage, frame_chunk):
    """Batches of 1, 4 and 2 frames (not whole chunks of 3: re-cut by the writer) give the same chunk files, bytes and
    metadata as one write of the whole dataset; the strings of the frames layout are gathered and written at the end."""
    dataset = example_dataset(stage, frame=7)
    whole = write_whole(tmp_path / "whole.zarr", dataset, stage, frame_chunk=frame_chunk)
    streamed = stream(tmp_path / "streamed.zarr", dataset, stage, [1, 4, 2], frame_chunk=frame_chunk)
    assert chunk_files(whole) == chunk_files(streamed)
    for name in dataset.variables:
        meta_whole, meta_streamed = (json.loads((p / name / "zarr.json").read_text()) for p in (whole, streamed))
        assert meta_whole == meta_streamed, name
    provenance = [store.store_provenance(store.open_store(p)) for p in (whole, streamed)]
    assert provenance[0][store.MANIFEST_KEY] == provenance[1][store.MANIFEST_KEY]
    assert store.fingerprint(whole) == store.fingerprint(streamed)
    assert_same_arrays(whole, streamed)


def test_frames_of_unknown_count_grow_the_arrays(tmp_path):
    """write_store(more_frames=generator) does not know the frame count: the arrays grow as frames come and are cut to
    the count at the end; the same chunks as a whole write (10 frames, chunks of 4: the last one partial)."""
    dataset = example_dataset("occ_label", frame=10)

    def parts():
        for part in frame_parts(dataset.isel(frame=slice(2, None)), [2, 5, 1]):
            yield xr.Dataset({name: (dataset[name].dims, values) for name, values in part.items()})

    whole = write_whole(tmp_path / "whole.zarr", dataset, "occ_label", frame_chunk=4)
    grown = write_whole(tmp_path / "grown.zarr", dataset.isel(frame=slice(0, 2)), "occ_label", frame_chunk=4, more_frames=parts())
    assert chunk_files(whole) == chunk_files(grown)
    assert store.open_store(grown).sizes["frame"] == 10
    assert_same_arrays(whole, grown)


def test_buffers_may_be_reused_once_the_append_is_done(tmp_path):
    """A caller filling the same buffers frame after frame (render's pinned ring) gets the store of a whole write, for
    maps big enough to be written a frame at a time and for small ones held until their unit is whole."""
    for h, w in ((3, 4), (300, 400)):
        dataset = example_dataset("render", frame=5, h=h, w=w)
        names = [name for name, var in dataset.data_vars.items() if "frame" in var.dims]
        buffers = {name: np.empty_like(dataset[name].values[:1]) for name in names}
        with store.StoreWriter(tmp_path / f"reused-{h}.zarr", dataset.isel(frame=slice(0, 0)), stage="render", config_subset={},
                               num_frames=5) as writer:
            for t in range(5):
                for name in names:
                    buffers[name][:] = dataset[name].values[t:t + 1]
                writer.append(buffers).result()
        assert_same_arrays(write_whole(tmp_path / f"whole-{h}.zarr", dataset, "render"), tmp_path / f"reused-{h}.zarr")


def test_attributes_added_at_the_end_and_timing(tmp_path):
    dataset = example_dataset("render", frame=3)
    with store.StoreWriter(tmp_path / "render.zarr", dataset.isel(frame=slice(0, 0)), stage="render", config_subset={"a": 1},
                           num_frames=3) as writer:
        for part in frame_parts(dataset, [1, 1, 1]):
            writer.append(part).result()  # the future is done once the frame's arrays are written
        writer.attrs.update(render_seconds=1.5)
    opened = store.open_store(tmp_path / "render.zarr", "render")
    assert opened.attrs["render_seconds"] == 1.5 and opened.attrs["scene"] == dataset.attrs["scene"]
    assert store.store_provenance(opened)["config"] == {"a": 1}
    assert writer.timing["write_s"] > 0 and set(writer.timing) == {"write_s", "wait_s", "close_s"}


def listing(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


def test_an_exception_mid_stream_leaves_nothing(tmp_path):
    """The stage fails after some frames were written: no store, no temporary sibling; an older store is kept."""
    dataset = example_dataset("occ_label", frame=6)
    path = tmp_path / "occ_label.zarr"
    with pytest.raises(RuntimeError, match="out of memory"):
        with store.StoreWriter(path, dataset.isel(frame=slice(0, 0)), stage="occ_label", config_subset={}, num_frames=6) as writer:
            for i, part in enumerate(frame_parts(dataset, [2, 2, 2])):
                if i == 2:
                    raise RuntimeError("out of memory")
                writer.append(part).result()
    assert listing(tmp_path) == []
    write_whole(path, dataset, "occ_label", seed=1)
    with pytest.raises(RuntimeError):
        with store.StoreWriter(path, dataset.isel(frame=slice(0, 0)), stage="occ_label", config_subset={}, num_frames=6) as writer:
            writer.append(frame_parts(dataset, [3])[0])
            raise RuntimeError("killed")
    assert listing(tmp_path) == ["occ_label.zarr"]
    assert store.store_provenance(store.open_store(path))["seed"] == 1


def test_a_failed_chunk_write_stops_the_stream(tmp_path, monkeypatch):
    """An error in a writer thread (disk full) is raised by a later append or at the end; nothing is left."""
    dataset = example_dataset("render", frame=8)
    real, calls = store.ChunkFiles.write, []

    def fail_on_the_fifth(self, start, values):
        calls.append(start)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real(self, start, values)

    monkeypatch.setattr(store.ChunkFiles, "write", fail_on_the_fifth)
    with pytest.raises(OSError, match="No space left"):
        stream(tmp_path / "render.zarr", dataset, "render", [1] * 8)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("sizes, message", [([2, 2], "4 frames were appended .* 5 announced"), ([3, 3], "more than the 5 announced")])
def test_another_frame_count_than_announced_is_an_error(tmp_path, sizes, message):
    dataset = example_dataset("occ_label", frame=6)
    with pytest.raises(LayoutError, match=message):
        with store.StoreWriter(tmp_path / "o.zarr", dataset.isel(frame=slice(0, 0)), stage="occ_label", config_subset={},
                               num_frames=5) as writer:
            for part in frame_parts(dataset, sizes):
                writer.append(part)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("change, message", [
    (lambda p: {**p, "semantics": p["semantics"].astype(np.int16)}, "variable 'semantics' has dtype int16"),
    (lambda p: {**p, "semantics": p["semantics"][:, :2]}, "variable 'semantics' has frames of shape"),
    (lambda p: {k: v for k, v in p.items() if k != "mask_lidar"}, "the 'occ_label' layout's frame variables are"),
    (lambda p: {**p, "timestamp_us": p["timestamp_us"][:1]}, "different frame counts"),
])
def test_appended_batches_are_checked(tmp_path, change, message):
    dataset = example_dataset("occ_label", frame=2)
    with pytest.raises(LayoutError, match=message):
        with store.StoreWriter(tmp_path / "o.zarr", dataset.isel(frame=slice(0, 0)), stage="occ_label", config_subset={},
                               num_frames=2) as writer:
            writer.append(change(frame_parts(dataset, [2])[0]))
    assert listing(tmp_path) == []


def test_killed_mid_stream_leaves_no_store(tmp_path):
    """SIGKILL after three of six frames were written: only a hidden temporary sibling, which the next write removes."""
    path = tmp_path / "occ_label.zarr"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from store_examples import example_dataset
        from uniscene import store
        dataset = example_dataset("occ_label", frame=6)
        with store.StoreWriter({str(path)!r}, dataset.isel(frame=slice(0, 0)), stage="occ_label", config_subset={{}},
                               num_frames=6) as writer:
            for t in range(6):
                if t == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
                writer.append({{name: dataset[name].values[t:t + 1] for name in dataset.data_vars}}).result()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == -9, out.stderr
    assert not path.exists()
    assert [p.name.startswith(".occ_label.zarr.tmp-") for p in tmp_path.iterdir()] == [True]
    with pytest.raises(UserError, match="does not exist"):
        store.open_store(path)
    write_whole(path, example_dataset("occ_label"), "occ_label")
    assert listing(tmp_path) == ["occ_label.zarr"]


def test_pending_writes_are_bounded(tmp_path, monkeypatch):
    """However fast the frames come, at most max_pending region writes are queued or running: host memory stays flat."""
    dataset = example_dataset("render", frame=12, h=300, w=400)  # 1.4 MB of maps a frame: a write per frame and variable
    real_write, real_submit, real_finished = store.StoreWriter._write, store.StoreWriter._submit, store.StoreWriter._finished
    lock, pending, most, running, most_running = threading.Lock(), [0], [0], [0], [0]

    def counting_submit(self, *args):
        with lock:  # counted before the task can finish
            pending[0] += 1
            most[0] = max(most[0], pending[0])
        return real_submit(self, *args)

    def counting_finished(self, task):
        with lock:
            pending[0] -= 1
        return real_finished(self, task)

    def slow_write(self, *args):
        with lock:
            running[0] += 1
            most_running[0] = max(most_running[0], running[0])
        time.sleep(0.01)
        try:
            return real_write(self, *args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(store.StoreWriter, "_submit", counting_submit)
    monkeypatch.setattr(store.StoreWriter, "_finished", counting_finished)
    monkeypatch.setattr(store.StoreWriter, "_write", slow_write)
    stream(tmp_path / "render.zarr", dataset, "render", [1] * 12, workers=2, max_pending=3)
    assert most[0] <= 3 + 1 and most_running[0] <= 2  # +1: a submit counted while its slot is still awaited
    assert store.open_store(tmp_path / "render.zarr").sizes["frame"] == 12


def test_read_ahead_keeps_order_raises_and_stops():
    produced = []

    def items(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"bad frame {i}")
            produced.append(i)
            yield i

    assert list(store.read_ahead(items(20), depth=3)) == list(range(20))
    reader = store.read_ahead(items(10, fail_at=4), depth=2)
    assert [next(reader) for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="bad frame 4"):
        next(reader)
    produced.clear()
    reader = store.read_ahead(items(1000), depth=2)
    assert next(reader) == 0
    reader.close()  # the consumer stops early: the thread ends without reading everything
    assert len(produced) <= 5
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]


def test_device_cast_equals_the_host_cast():
    """RenderedMaps.packed casts with torch where the maps are; the stores were written with numpy's cast on the host.
    Every finite float32 and the infinities round to the same float16 bits (round to nearest even, subnormals too);
    NaN stays NaN."""
    from uniscene.render.occupancy import RenderedMaps

    bits = np.random.default_rng(0).integers(0, 2**32, size=2_000_000, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0.0, -0.0, 65504.0, 65519.99, 65520.0, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8, np.inf, -np.inf], np.float32)
    values = np.concatenate([bits.view(np.float32), edges]).reshape(1, 1, -1)
    maps = RenderedMaps(torch.zeros(values.shape, dtype=torch.uint8), torch.from_numpy(values), torch.from_numpy(values)).packed()
    ours, numpy_cast = maps.depth.numpy(), values.astype(np.float16)
    finite = ~np.isnan(values)
    np.testing.assert_array_equal(ours[finite].view(np.uint16), numpy_cast[finite].view(np.uint16))
    assert np.isnan(ours[~finite]).all()
    assert maps.semantic.dtype == torch.uint8 and maps.alpha.dtype == torch.float16


# ------------------------------------------------------------------------------------------ the commands

from test_occ_label_command import config_json  # noqa: E402,F401  (the config of the hand-built labelling scene)
from test_render_command import stores  # noqa: E402,F401  (the render command run on the hand-built scene)


def test_render_command_store_equals_the_unstreamed_maps(stores):  # noqa: F811
    """The streamed render store holds, bit for bit, what the code before streaming stored: render_occupancy's maps
    copied to the host as float32 and cast to float16 there, frame after frame."""
    from test_render_command import GRID
    from uniscene.config import fill_defaults
    from uniscene.render.cameras import scale_intrinsics
    from uniscene.render.gaussians import marking_layers
    from uniscene.render.occupancy import RenderSettings, render_occupancy

    paths, config, _ = stores
    settings = RenderSettings.from_config(fill_defaults(config))  # as the command reads it
    frames, occupancy, layout = (store.open_store(paths[name]) for name in ("frames", "occ_label", "layout"))
    size_hw = tuple(config["render"]["image_size"])
    intrinsics = scale_intrinsics(frames["cam_intrinsics"].values, frames["cam_image_size"].values[None], size_hw)
    rendered = store.open_store(paths["render"], "render")
    for t in range(frames.sizes["frame"]):
        maps = render_occupancy(occupancy["semantics"][t].values, GRID, frames["ego_from_cam"].values[t], intrinsics[t], size_hw,
                                marking_layers(layout["layout"][t].values, layout.attrs["channel_names"]), settings, "cpu", "torch").numpy()
        np.testing.assert_array_equal(rendered["semantic"].values[t], maps["semantic"])
        for name in ("depth", "alpha"):
            expected = maps[name].astype(np.float16)
            assert np.array_equal(rendered[name].values[t].view(np.uint16), expected.view(np.uint16)), name
    np.testing.assert_array_equal(rendered["intrinsics"].values, intrinsics)


def test_occ_label_command_store_equals_the_labeller_output(config_json, tmp_path, monkeypatch):  # noqa: F811
    """The streamed occ_label store holds what label_frames yielded, batch after batch (what write_store wrote)."""
    import uniscene.commands.occ_label as command
    from test_occ_label_command import run, write_dataset

    batches, label_frames = [], command.label_frames

    def kept(*args, **kwargs):  # a copy of every batch, as the labeller made it
        for batch in label_frames(*args, **kwargs):
            batches.append(copy.deepcopy(batch))
            yield batch

    monkeypatch.setattr(command, "label_frames", kept)
    config = {**config_json, "occ_label": {**config_json["occ_label"], "frames_per_batch": 5}}  # 12 frames in 3 batches
    assert run(config, write_dataset(tmp_path / "hand"), tmp_path / "occ_label.zarr") == 0
    labelled = store.open_store(tmp_path / "occ_label.zarr", "occ_label")
    assert len(batches) == 3
    for name in ("semantics", "mask_lidar", "mask_camera"):
        np.testing.assert_array_equal(labelled[name].values, np.concatenate([getattr(b, name) for b in batches]), err_msg=name)


from test_layout_synthetic import layout_run  # noqa: E402,F401  (frames and layout of a synthetic scene, by the CLI)


def test_layout_command_streams_the_layouts_of_one_batch(layout_run, tmp_path, monkeypatch):  # noqa: F811
    """Rasterised 5 frames at a time and streamed, the layout store equals the one rasterised in one batch."""
    import uniscene.commands.layout as command
    from test_layout_synthetic import SCENE
    from uniscene.cli import main as cli_main
    from uniscene.config import dumps
    from uniscene.paths import scene_store

    config, _, results = layout_run
    whole = store.open_store(scene_store(results, SCENE, "layout"), "layout")
    assert whole.sizes["frame"] <= command.STREAM_FRAMES  # the fixture's layouts were made in one batch
    monkeypatch.setattr(command, "STREAM_FRAMES", 5)
    out = tmp_path / "layout.zarr"
    assert cli_main(["layout", "--config", dumps(config), "--frames", str(scene_store(results, SCENE, "frames")), "--out", str(out)]) == 0
    streamed = store.open_store(out, "layout")
    for name in whole.variables:
        assert whole[name].dtype == streamed[name].dtype, name
        if whole[name].dtype.kind in "OUT":
            assert whole[name].values.tolist() == streamed[name].values.tolist(), name
        else:
            np.testing.assert_array_equal(whole[name].values, streamed[name].values, err_msg=name)


def test_chunk_files_are_the_bytes_zarr_writes_edge_chunks_padded(tmp_path):
    """ChunkFiles, the writer threads' path, writes the chunk files zarr writes, also where a dim other than `frame`
    ends in a partial chunk (padded with the fill value)."""
    values = np.random.default_rng(0).normal(size=(4, 10, 3)).astype(np.float16)
    files = {}
    for way in ("zarr", "direct"):
        group = zarr.open_group(tmp_path / way, mode="w", zarr_format=3)
        array = group.create_array("x", shape=values.shape, chunks=(2, 4, 3), dtype=values.dtype, fill_value=7,
                                   compressors=(zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),
                                                zarr.codecs.Crc32cCodec()), config={"write_empty_chunks": True})
        if way == "zarr":
            array[:] = values
        else:
            chunk_files_of = store.ChunkFiles.of(array, tmp_path / way / "x")
            assert chunk_files_of.whole_chunks(0, 4) and not chunk_files_of.whole_chunks(0, 3)
            chunk_files_of.write(0, values)
        files[way] = chunk_files(tmp_path / way)
        np.testing.assert_array_equal(zarr.open_array(tmp_path / way / "x")[:], values)
    assert len(files["zarr"]) == 6 and files["zarr"] == files["direct"]
