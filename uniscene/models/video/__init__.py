"""Multi-view video from rendered semantic and depth maps: a spatio-temporal UNet of the Stable Video Diffusion
family in an image autoencoder's latent space (UniScene's video model).

network.py (MultiViewVideoModel: diffusers' UNetSpatioTemporalConditionModel walked block by block, with a
MultiViewAdapter holding the zero-initialised condition encoder, camera and box tokens and the cross-view
attention between ring neighbours) -> conditions.py (maps, cameras and boxes of a scene as the network's
inputs, at the video size) -> pipeline.py (MultiViewVideoPipeline: autoencoder + UNet + adapter + a diffusers
scheduler; whole scenes in chained clips, classifier-free guidance) -> train.py (the autoencoder from scratch,
clips of latents, the diffusion loss on uniscene.training); settings.py is the `video:` config section.
"""
