"""`deepnet diagnose`: a verdict on a training run from its learning curves, with the evidence
in numbers and the remedies the literature gives. Reads a run directory; trains nothing."""

from deepnet.diagnose._verdict import VERDICTS, Diagnosis, diagnose, diagnose_history

__all__ = ["VERDICTS", "Diagnosis", "diagnose", "diagnose_history"]
