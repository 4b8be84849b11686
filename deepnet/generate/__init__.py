"""Generation: image grids drawn from a generative run, their quality measured with a
classifier run (``samples.json``), and an autoencoder's codes (``deepnet encode``).

Reads run directories and the layers below (data, models, train); no other verb's package.
"""

from deepnet.generate._sample import (
    CONFIDENT,
    draw_samples,
    encode_run,
    frechet_distance,
    sample_run,
    score_samples,
)

__all__ = ["CONFIDENT", "draw_samples", "encode_run", "frechet_distance", "sample_run", "score_samples"]
