"""torchvision's image classification models, as plain data (generated: do not edit).

Written by ``python -m scripts.torchvision_table > inference/torchvision_models.py``
from torchvision 0.29.1+cu130's registry; ``tests/inference/test_models.py`` checks it
against the installed torchvision.  For each model: the weights entry its SDFS file
``models/NAME.pth`` is expected to hold (a state_dict of those weights' architecture)
and those weights' own preprocessing (``weights.transforms()``): resize the shorter
side to ``resize`` (``interpolation``, antialiased), centre-crop ``crop``, scale to
[0, 1], normalise with ``mean`` and ``std``.  Importing it costs no torch.
"""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name: (weights entry, resize, crop, interpolation, mean, std)
TORCHVISION_MODELS: dict[
    str, tuple[str, int, int, str, tuple[float, float, float], tuple[float, float, float]]
] = {
    "alexnet": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "convnext_base": ("IMAGENET1K_V1", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "convnext_large": ("IMAGENET1K_V1", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "convnext_small": ("IMAGENET1K_V1", 230, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "convnext_tiny": ("IMAGENET1K_V1", 236, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "densenet121": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "densenet161": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "densenet169": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "densenet201": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b0": ("IMAGENET1K_V1", 256, 224, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b1": ("IMAGENET1K_V2", 255, 240, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b2": ("IMAGENET1K_V1", 288, 288, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b3": ("IMAGENET1K_V1", 320, 300, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b4": ("IMAGENET1K_V1", 384, 380, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b5": ("IMAGENET1K_V1", 456, 456, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b6": ("IMAGENET1K_V1", 528, 528, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b7": ("IMAGENET1K_V1", 600, 600, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_v2_l": ("IMAGENET1K_V1", 480, 480, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "efficientnet_v2_m": ("IMAGENET1K_V1", 480, 480, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_v2_s": ("IMAGENET1K_V1", 384, 384, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "googlenet": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "inception_v3": ("IMAGENET1K_V1", 342, 299, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "maxvit_t": ("IMAGENET1K_V1", 224, 224, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "mnasnet0_5": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "mnasnet0_75": ("IMAGENET1K_V1", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "mnasnet1_0": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "mnasnet1_3": ("IMAGENET1K_V1", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "mobilenet_v2": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "mobilenet_v3_large": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "mobilenet_v3_small": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_x_16gf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_x_1_6gf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_x_32gf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_x_3_2gf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_x_400mf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_x_800mf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_x_8gf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_y_128gf": ("IMAGENET1K_SWAG_E2E_V1", 384, 384, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_y_16gf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_y_1_6gf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_y_32gf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_y_3_2gf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_y_400mf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_y_800mf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "regnet_y_8gf": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "resnet101": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "resnet152": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "resnet18": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "resnet34": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "resnet50": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "resnext101_32x8d": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "resnext101_64x4d": ("IMAGENET1K_V1", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "resnext50_32x4d": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "shufflenet_v2_x0_5": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "shufflenet_v2_x1_0": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "shufflenet_v2_x1_5": ("IMAGENET1K_V1", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "shufflenet_v2_x2_0": ("IMAGENET1K_V1", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "squeezenet1_0": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "squeezenet1_1": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "swin_b": ("IMAGENET1K_V1", 238, 224, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "swin_s": ("IMAGENET1K_V1", 246, 224, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "swin_t": ("IMAGENET1K_V1", 232, 224, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "swin_v2_b": ("IMAGENET1K_V1", 272, 256, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "swin_v2_s": ("IMAGENET1K_V1", 260, 256, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "swin_v2_t": ("IMAGENET1K_V1", 260, 256, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "vgg11": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "vgg11_bn": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "vgg13": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "vgg13_bn": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "vgg16": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "vgg16_bn": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "vgg19": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "vgg19_bn": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "vit_b_16": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "vit_b_32": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "vit_h_14": ("IMAGENET1K_SWAG_E2E_V1", 518, 518, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "vit_l_16": ("IMAGENET1K_V1", 242, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "vit_l_32": ("IMAGENET1K_V1", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "wide_resnet101_2": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "wide_resnet50_2": ("IMAGENET1K_V2", 232, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
}
