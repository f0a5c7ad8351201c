"""Loading a trained OccVAE folder (save_pretrained) with one clear message for each way it can be wrong."""

from uniscene.models.checked_load import load_checked
from uniscene.models.occ_vae.network import OccVAE


def load_vae(path, grid_shape: tuple | None = None, device: str = "cpu") -> OccVAE:
    """The OccVAE saved at `path`, in eval mode on `device`; checked to be an OccVAE for `grid_shape` (X, Y, Z)."""
    return load_checked(OccVAE, path, grid_shape, device, "`uniscene train-occ-vae`", "results/models/occ_vae")
