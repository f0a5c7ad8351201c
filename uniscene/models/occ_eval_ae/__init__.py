"""The evaluation-only occupancy autoencoder: the ruler of F3D and MMD in results/metrics/occ_gen.json.

network.py (OccEvalAE: labels -> a global feature vector -> labels per patch) -> train.py
(frames of the training scenes' label occupancy, read lazily; cross-entropy on the shared
trainer, uniscene.training) -> pretrained.py (loading a trained folder with one clear error,
and its identity for the metrics) -> features.py (features [N, D] of a store's frames);
settings.py is the `occ_eval_ae:` config section. It shares nothing with the generator's VAE
(models/occ_vae): own network, own weights, own seed.
"""
