"""Adversarial robustness: attacks in pixel space, the robustness report, defences.

``deepnet attack`` (:func:`attack_run`) writes ``robustness.json`` and its figures into a
run; ``deepnet harden`` (:func:`harden`) trains a defended model into a new run.
"""

from deepnet.robust.attacks import PixelModel, deepfool, fgsm, least_likely, perturbation_norm, pgd, project
from deepnet.robust.harden import HARDEN_METHODS, AdversarialExamples, RobustEarlyStopping, harden
from deepnet.robust.report import ATTACK_METHODS, attack_run, masking_flags

__all__ = [
    "ATTACK_METHODS",
    "HARDEN_METHODS",
    "AdversarialExamples",
    "PixelModel",
    "RobustEarlyStopping",
    "attack_run",
    "deepfool",
    "fgsm",
    "harden",
    "least_likely",
    "masking_flags",
    "perturbation_norm",
    "pgd",
    "project",
]
