"""Every config in examples/ is one a user can run: it parses, and its model is in the zoo."""

from pathlib import Path

import pytest

from deepnet.config import load_config, read_config_file
from deepnet.models import list_models
from deepnet.tune.search import load_search

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid(path):
    if "search" in read_config_file(path):  # a tuning config: deepnet tune reads it
        config = load_search(path).config_for({})
    else:
        config = load_config(path)
    assert config.model.name in list_models()
