"""The transformer families of the zoo. Importing this module registers them all; their code
lives one family per file (``bert.py``, ``gpt.py``, ``llama.py``, ``palm.py``, ``t5.py``,
``vit.py``, ``deepseek.py``, ``transformer_classifier.py``), shared pieces in
``_attention.py`` and ``_moe.py``, and sampling in ``_generate.py``.
"""

from deepnet.models import (  # noqa: F401  (imported for their @register_model side effects)
    bert,
    deepseek,
    gpt,
    llama,
    palm,
    t5,
    transformer_classifier,
    vit,
)
from deepnet.models._generate import generate

__all__ = ["generate"]
