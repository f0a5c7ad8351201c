"""Gaussian joint rendering of occupancy into per-camera semantic and depth maps (stage `render`).

gaussians.py: occupancy (+ layout road markings) -> one Gaussian per occupied voxel;
cameras.py: uniscene cameras -> gsplat viewmats and intrinsics at the render size;
torch_renderer.py / gsplat_renderer.py: the two rasterisers, one interface;
occupancy.py: `render_occupancy`, the stage's core; preview.py: colour previews.
"""
