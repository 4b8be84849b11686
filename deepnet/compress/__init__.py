"""deepnet compress: pruning, trained weight sharing and int8 quantization, each stage measured.

Reads a run directory and writes a new one (``model.json`` records its parent) with
``compression.json`` and ``plots/compression.png``; ``deepnet evaluate`` reads it back.
"""

from deepnet.compress.pipeline import CompressionSettings, compress_run
from deepnet.compress.pruning import (GradualPruning, HoldMasks, gradual_sparsity, magnitude_masks, sparsity_schedule,
                                      structured_prune, structured_prune_convnet, structured_prune_mlp)
from deepnet.compress.quantize import export_onnx, quantize_onnx
from deepnet.compress.sharing import kmeans_1d, release_sharing, share_weights

__all__ = [
    "CompressionSettings",
    "GradualPruning",
    "HoldMasks",
    "compress_run",
    "export_onnx",
    "gradual_sparsity",
    "kmeans_1d",
    "magnitude_masks",
    "quantize_onnx",
    "release_sharing",
    "share_weights",
    "sparsity_schedule",
    "structured_prune",
    "structured_prune_convnet",
    "structured_prune_mlp",
]
