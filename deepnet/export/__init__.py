"""``deepnet export``: a run's model as one self-contained file for other runtimes."""

from deepnet.export.exporter import FORMATS, ExportError, ExportResult, export_model, export_run, read_onnx_metadata

__all__ = ["FORMATS", "ExportError", "ExportResult", "export_model", "export_run", "read_onnx_metadata"]
