"""Occupancy generation from BEV layouts: a temporal DiT over the occupancy VAE's latents (UniScene's second model).

network.py (OccDiT: patch tokens, spatial / temporal attention, adaLN-Zero, null layout for
guidance) -> pipeline.py (OccGenPipeline: VAE + OccDiT + a diffusers scheduler; whole scenes in
chained clips) -> train.py (clips of VAE latents, the masked diffusion loss, on uniscene.training);
settings.py is the `occ_dit:` config section.
"""
