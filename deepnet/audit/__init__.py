"""`deepnet audit`: is the data clean? Likely label errors (confident learning on out-of-fold
predicted probabilities, through cleanlab), exact and near duplicates inside a split, examples
shared between train and test (leakage), class imbalance and outliers; ``audit.json`` plus
image grids of the top findings. Reads a dataset (and optionally a run's or a config's model
recipe); writes only into its output folder."""

from deepnet.audit._audit import AUDIT_KEYS, audit, out_of_fold_probabilities
from deepnet.audit._neighbours import Neighbours, find_pairs, project

__all__ = ["AUDIT_KEYS", "Neighbours", "audit", "find_pairs", "out_of_fold_probabilities", "project"]
