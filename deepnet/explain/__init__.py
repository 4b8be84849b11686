"""`deepnet explain`: what a classifier looks at. Attribution maps of a run's test examples,
overlaid on the inputs as one image grid per method (``explanations/<method>.png``), or
per-token attributions for text models; computed in chunks so memory stays bounded.

The attributions come from Captum (the PyTorch project's own interpretability library, kept
in step with PyTorch releases): its implementations are the reference ones, tested against
the papers' properties, and handle batching of the integration steps and noise samples."""

from deepnet.explain._attribute import METHODS, Explanation, attribute, explain

__all__ = ["METHODS", "Explanation", "attribute", "explain"]
