"""`deepnet calibrate`: can a classifier's confidence be trusted? Expected calibration error,
a reliability diagram, and temperature scaling fitted on the validation split, stored in the
run (``calibration.json``) so that ``predict``, ``evaluate``, ``export`` and ``serve`` apply it.

Its own package (not part of ``explain``): it is a verb of its own that changes how the run
answers, while ``explain`` only looks at it."""

from deepnet.calibrate._temperature import (
    Calibration,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)

__all__ = ["Calibration", "calibrate", "expected_calibration_error", "fit_temperature", "reliability_bins"]
