"""LPIPS (Zhang et al. 2018, the AlexNet variant), with its backbone read from a local file.

torchmetrics ships LPIPS's learned linear heads in its wheel (lpips_models/alex.pth) but fetches
the AlexNet backbone (torchvision's ImageNet weights) at run time, through torchvision. Here the
backbone is a plain `features` stack laid out as torchvision's `alexnet().features` (so its
state dict, alexnet-owt-7be5be79.pth, loads as it is; the classifier's keys are ignored), read
from the file that config key video_metrics.lpips.backbone names (sha256-pinned). Computation,
as the reference implementation:

1. images in [0, 1] -> [-1, 1] -> the scaling layer ((x - shift) / scale per channel);
2. AlexNet features after each of its five ReLUs (relu1 ... relu5);
3. each feature map unit-normalised along channels (eps 1e-8 inside the root, as torchmetrics);
4. squared difference of the two images' maps, a learned 1 x 1 linear head per layer (no bias),
   mean over the pixels;
5. the sum over the five layers: one distance per image pair (0 for identical images).

Letters: N images, C channels, H W pixels.
"""

from pathlib import Path

import torch
from torch import nn

from uniscene.errors import UserError

CHANNELS = (64, 192, 384, 256, 256)  # relu1 ... relu5
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# the `features` indices after which LPIPS taps AlexNet (torchvision's layout: conv, relu, pool, ...)
TAPS = (1, 4, 7, 9, 11)


def alexnet_features() -> nn.Sequential:
    """torchvision's `alexnet().features`, module for module (its state-dict keys `0.weight` ... `10.bias`)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),
    )


def torchmetrics_heads_path() -> Path:
    """The linear heads that torchmetrics ships (its `lpips_models/alex.pth`)."""
    import torchmetrics

    return Path(torchmetrics.__file__).parent / "functional" / "image" / "lpips_models" / "alex.pth"


class LPIPS(nn.Module):
    """LPIPS distance of image pairs [N, 3, H, W] in [0, 1] -> [N]."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.features = alexnet_features()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.requires_grad_(False)
        self.eval()

    def load_backbone(self, state: dict) -> None:
        """Backbone weights: torchvision's AlexNet state dict (`features.*`; other keys ignored) or a bare `features` one."""
        if any(k.startswith("features.") for k in state):
            state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        self.features.load_state_dict(state)  # strict: a wrong file fails naming the keys

    def load_heads(self, state: dict) -> None:
        """Linear heads: LPIPS's own file layout (`lin0.model.1.weight` ... `lin4.model.1.weight`, as torchmetrics ships)."""
        self.heads.load_state_dict({f"{i}.weight": state[f"lin{i}.model.1.weight"] for i in range(len(CHANNELS))})

    def layer_features(self, images: torch.Tensor) -> list:
        """[N, 3, H, W] in [0, 1] -> the five unit-normalised feature maps [N, C_l, H_l, W_l]."""
        x = ((images * 2 - 1) - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAPS:
                out.append(x / torch.sqrt((x * x).sum(1, keepdim=True) + 1e-8))
            if i == TAPS[-1]:
                break
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"LPIPS takes two image batches [N, 3, H, W] of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        total = torch.zeros(a.shape[0], device=a.device)
        for head, fa, fb in zip(self.heads, self.layer_features(a), self.layer_features(b)):
            total = total + head((fa - fb) ** 2).mean((1, 2, 3))
        return total


def load_lpips(backbone_path, heads_path=None) -> LPIPS:
    """LPIPS with the backbone from `backbone_path` (already pinned) and the heads from torchmetrics' file (or `heads_path`)."""
    model = LPIPS()
    try:
        model.load_backbone(torch.load(backbone_path, map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError, ValueError, OSError) as error:
        raise UserError(f"{backbone_path} (config key video_metrics.lpips.backbone) is not torchvision's AlexNet state dict "
                        f"({str(error).splitlines()[0]}): point it at alexnet-owt-7be5be79.pth or the like") from None
    heads = Path(heads_path) if heads_path is not None else torchmetrics_heads_path()
    if not heads.is_file():
        raise UserError(f"LPIPS's linear heads {heads} are missing: reinstall torchmetrics (they ship in its wheel)")
    model.load_heads(torch.load(heads, map_location="cpu", weights_only=True))
    return model
