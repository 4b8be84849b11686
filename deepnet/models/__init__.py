"""The model zoo. Importing this package registers every family with the registry."""

from deepnet.models import (  # noqa: F401  (imported for their @register_model side effects)
    alexnet,
    autoencoder,
    convnet,
    dbn,
    ddpm,
    efficientnet,
    gan,
    googlenet,
    lenet,
    mlp,
    resnet,
    rnn,
    smallcnn,
    transformer,
    vae,
    vgg,
)
from deepnet.models._layers import activation, initialize
from deepnet.models._registry import (
    ModelInfo,
    count_parameters,
    create_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "ModelInfo",
    "activation",
    "count_parameters",
    "create_model",
    "initialize",
    "list_models",
    "model_info",
    "register_model",
]
