"""The occupancy VAE: semantic occupancy clips <-> continuous latent frames (UniScene's first model).

network.py (OccVAE: encoder with axial attention, decoder with temporal attention) ->
loss.py (class-weighted cross-entropy, Lovasz-softmax, KL) -> train.py (clips read lazily from
occupancy stores or Occ3D folders, training on uniscene.training) -> scenes.py (whole scenes in
clips); settings.py is the `occ_vae:` config section.
"""
