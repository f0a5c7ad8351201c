"""LiDAR generation from semantic occupancy (the LiDAR half of UniScene's output).

beams.py (the LIDAR_TOP pattern, range images) -> prior.py (beams cast through occupancy with
the voxel DDA) -> network.py (LidarRangeNet: range correction, intensity, ray drop) ->
pipeline.py (occupancy + poses -> sweeps); baseline.py is the no-learning ray-cast it is
compared against; train.py the training loop; inputs.py what a scene's stores provide;
settings.py the `lidar:` config section.
"""
