"""scikit-learn estimators: ``DNNClassifier`` and ``DNNRegressor``.

They are scikit-learn estimators in full (``get_params`` / ``set_params``, ``clone``,
fitted attributes ending in ``_``, input validation, ``classes_`` of any label type), so
they drop into ``Pipeline``, ``GridSearchCV`` and ``cross_val_score``::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from deepnet.sklearn import DNNClassifier

    pipeline = make_pipeline(StandardScaler(), DNNClassifier(hidden_layers=(256,), epochs=40))
    pipeline.fit(X_train, y_train).score(X_test, y_test)

The constructor mirrors the experiment config: ``model`` and its arguments (the
``model:`` section), ``epochs``, ``batch_size``, ``lr``, ``optimizer``... (the ``train:``
section, validated by the same rules). Training is the train layer's own pieces
(optimizer, schedule, loss, batch loader) in a plain loop over in-memory tensors.

Pickling a fitted estimator (joblib does it for ``n_jobs > 1``) stores the network as its
registry spec plus safetensors bytes, never as a pickled module.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from deepnet.config import TrainConfig, _explain
from deepnet.data import BatchLoader, Split
from deepnet.models import create_model, model_info
from deepnet.train.losses import compute_loss
from deepnet.train.optim import build_optimizer, build_schedule

__all__ = ["DNNClassifier", "DNNRegressor"]

_ARCHITECTURE = ("hidden_layers", "activation", "dropout")
_PREDICT_BATCH = 4096


class _DNNEstimator(BaseEstimator):
    _loss = "cross_entropy"

    def __init__(
        self,
        model: str = "mlp",
        hidden_layers: tuple[int, ...] | None = (256,),
        activation: str = "relu",
        dropout: float = 0.0,
        model_args: dict[str, Any] | None = None,
        input_shape: tuple[int, ...] | None = None,
        epochs: int = 30,
        batch_size: int = 64,
        lr: float = 3e-3,
        optimizer: str = "adamw",
        weight_decay: float = 0.0,
        schedule: str = "cosine",
        device: str = "cpu",
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.model = model
        self.hidden_layers = hidden_layers
        self.activation = activation
        self.dropout = dropout
        self.model_args = model_args
        self.input_shape = input_shape
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.device = device
        self.random_state = random_state

    # -- what subclasses define ------------------------------------------------------------
    def _encode_targets(self, y: np.ndarray, classes: np.ndarray | None) -> torch.Tensor:
        raise NotImplementedError

    def _num_outputs(self) -> int:
        raise NotImplementedError

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> _DNNEstimator:
        """Train a fresh network for ``epochs`` epochs on ``X`` ``(n_samples, n_features)``
        and ``y`` ``(n_samples,)`` (regression: also ``(n_samples, n_outputs)``)."""
        X, y = validate_data(self, X, y, dtype=np.float32, multi_output=self._loss == "mse",
                             y_numeric=self._loss == "mse", reset=True)
        targets = self._encode_targets(y, None)
        self._start(len(X), schedule=self.schedule)
        for _ in range(self._config.epochs):
            self._epoch(X, targets)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> _DNNEstimator:
        """One epoch over ``X``, ``y``, continuing the network (and its optimizer) of earlier
        calls; the first call builds it (a classifier then needs ``classes``, every label
        that will ever appear). The learning rate stays constant."""
        first = not hasattr(self, "model_")
        X, y = validate_data(self, X, y, dtype=np.float32, multi_output=self._loss == "mse",
                             y_numeric=self._loss == "mse", reset=first)
        targets = self._encode_targets(y, classes if first else None)
        if first:
            self._start(len(X), schedule="constant")
        elif not hasattr(self, "_optimizer"):  # unpickled: the optimizer state was not kept
            self._optimizer = build_optimizer(self.model_, self._config)
            self._schedule = build_schedule(self._optimizer, self._config.model_copy(update={"schedule": "constant"}), 1)
        self._epoch(X, targets)
        return self

    def _train_config(self, schedule: str) -> TrainConfig:
        settings = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "optimizer": self.optimizer,
                    "weight_decay": self.weight_decay, "schedule": schedule, "device": self.device,
                    "loss": self._loss}
        try:
            return TrainConfig.model_validate(settings)
        except ValidationError as err:
            raise _explain(err, type(self).__name__, TrainConfig) from None

    def _model_arguments(self) -> dict[str, Any]:
        info = model_info(self.model)
        if info.input_kind not in ("image", "vector"):
            raise ValueError(f"{type(self).__name__} trains models of feature vectors or images; {self.model!r} "
                             f"reads {info.input_kind} inputs. Pick e.g. model='mlp'.")
        accepted = info.accepted_arguments()
        args: dict[str, Any] = {}
        for name in _ARCHITECTURE:
            value = getattr(self, name)
            if name in accepted:
                args[name] = value
            elif value is not None and (name != "activation" or value != "relu") and (name != "dropout" or value):
                raise ValueError(f"Model {self.model!r} has no argument {name!r}; received {name}={value!r}. "
                                 f"Pass {name}=None (or leave it at its default) for this model.")
        args.update(self.model_args or {})
        shape = tuple(self.input_shape) if self.input_shape is not None else (self.n_features_in_,)
        if math.prod(shape) != self.n_features_in_:
            raise ValueError(f"input_shape={shape} holds {math.prod(shape)} values per example but X has "
                             f"{self.n_features_in_} features. Pass an input_shape whose product is {self.n_features_in_}.")
        return {**args, "input_shape": shape, "num_classes": self._num_outputs()}

    def _start(self, n_samples: int, schedule: str) -> None:
        """A fresh network, optimizer and schedule; seeded from ``random_state``."""
        self._config = self._train_config(schedule)
        self._seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        torch.manual_seed(self._seed)
        self._device = torch.device(self.device)
        self.model_ = create_model(self.model, **self._model_arguments()).to(self._device)
        steps = max(1, n_samples // self._config.batch_size if n_samples > self._config.batch_size else 1)
        self._optimizer = build_optimizer(self.model_, self._config)
        self._schedule = build_schedule(self._optimizer, self._config, steps)
        self.loss_curve_: list[float] = []
        self.n_iter_ = 0

    def _inputs(self, X: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        shape = tuple(self.input_shape) if self.input_shape is not None else (X.shape[1],)
        return x.reshape(len(x), *shape).to(self._device)

    def _epoch(self, X: np.ndarray, targets: torch.Tensor) -> None:
        x, c = self._inputs(X), self._config
        loader = BatchLoader(Split(x, targets.to(self._device)), c.batch_size, shuffle=True,
                             seed=self._seed, drop_last=len(x) > c.batch_size)
        loader.set_epoch(self.n_iter_)
        self.model_.train()
        total, count = torch.zeros((), dtype=torch.float64, device=self._device), 0
        for xb, yb in loader:
            loss = compute_loss(c.loss, self.model_(xb), yb)
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
            self._schedule.step()
            total, count = total + loss.detach() * len(yb), count + len(yb)
        total = float(total)  # one device sync per epoch
        if not math.isfinite(total):
            raise ValueError(f"The training loss became {total}: the learning rate lr={self.lr} is too high "
                             "for this data, or the features are unscaled. Lower lr or put a StandardScaler first.")
        self.loss_curve_.append(total / max(count, 1))
        self.n_iter_ += 1

    # -- predicting ------------------------------------------------------------------------
    def _outputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        x = self._inputs(X)
        self.model_.eval()
        with torch.inference_mode():
            out = [self.model_(x[i : i + _PREDICT_BATCH]).float().cpu() for i in range(0, len(x), _PREDICT_BATCH)]
        return torch.cat(out).numpy() if out else np.zeros((0, self._num_outputs()), np.float32)

    # -- pickling without pickling a module --------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("model_", "_optimizer", "_schedule")}
        if "model_" in self.__dict__:
            model: nn.Module = self.model_
            state["model_"] = {"spec": model.deepnet_spec,
                               "weights": save_tensors({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state.pop("model_", None)
        self.__dict__.update(state)
        if saved is not None:
            model = create_model(saved["spec"]["name"], **saved["spec"]["args"])
            model.load_state_dict(load_tensors(saved["weights"]))
            self.model_ = model.to(self._device)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class DNNClassifier(ClassifierMixin, _DNNEstimator):
    """A deep network classifier. ``X`` ``(n_samples, n_features)``; ``y`` labels of any type
    (``classes_`` holds them sorted). ``predict_proba`` gives ``(n_samples, n_classes)``.

    Fitted attributes: ``classes_``, ``n_features_in_``, ``model_`` (the ``torch.nn.Module``),
    ``loss_curve_`` (mean training loss per epoch), ``n_iter_`` (epochs trained).
    """

    _loss = "cross_entropy"

    def _encode_targets(self, y: np.ndarray, classes: Any) -> torch.Tensor:
        check_classification_targets(y)
        if not hasattr(self, "model_"):
            self.classes_ = np.unique(y) if classes is None else np.unique(np.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError(f"DNNClassifier needs at least 2 classes in y; received only one class: "
                                 f"{self.classes_.tolist()!r}.")
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(f"y holds labels {unknown[:5].tolist()!r} not in classes_ {self.classes_[:10].tolist()!r}. "
                             "Pass every label to the first partial_fit(..., classes=...).")
        return torch.from_numpy(np.searchsorted(self.classes_, y).astype(np.int64))

    def fit(self, X: Any, y: Any) -> DNNClassifier:
        self.__dict__.pop("model_", None)  # a fresh fit re-reads classes_ from y
        return super().fit(X, y)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> DNNClassifier:
        if not hasattr(self, "model_") and classes is None:
            raise ValueError("The first partial_fit needs classes=: every label y will ever hold "
                             "(e.g. classes=np.unique(y_all)), so that the output layer has one unit per class.")
        return super().partial_fit(X, y, classes)

    def _num_outputs(self) -> int:
        return len(self.classes_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n_samples, n_classes)``, columns in the order of ``classes_``."""
        logits = torch.from_numpy(self._outputs(X))
        return torch.softmax(logits.double(), dim=-1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """The most probable label of each row, ``(n_samples,)``."""
        outputs = self._outputs(X)  # checks that the estimator is fitted first
        return self.classes_[outputs.argmax(axis=1)]


class DNNRegressor(RegressorMixin, _DNNEstimator):
    """A deep network regressor trained with the mean squared error. ``y`` ``(n_samples,)`` or
    ``(n_samples, n_outputs)``; ``predict`` returns the same shape.

    Fitted attributes: ``n_features_in_``, ``n_outputs_``, ``model_``, ``loss_curve_``, ``n_iter_``.
    """

    _loss = "mse"

    def _encode_targets(self, y: np.ndarray, classes: Any) -> torch.Tensor:
        y = np.asarray(y, dtype=np.float32)
        outputs = 1 if y.ndim == 1 else y.shape[1]
        if hasattr(self, "model_") and outputs != self.n_outputs_:
            raise ValueError(f"y has {outputs} outputs but the network was built for {self.n_outputs_}. "
                             "Call fit for a fresh network.")
        self.n_outputs_, self._one_dimensional = outputs, y.ndim == 1
        return torch.from_numpy(y.reshape(len(y), outputs))

    def fit(self, X: Any, y: Any) -> DNNRegressor:
        self.__dict__.pop("model_", None)
        return super().fit(X, y)

    def _num_outputs(self) -> int:
        return self.n_outputs_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def predict(self, X: Any) -> np.ndarray:
        """Predictions ``(n_samples,)``, or ``(n_samples, n_outputs)`` when fitted on 2-D ``y``."""
        out = self._outputs(X).astype(np.float64)
        return out.ravel() if self._one_dimensional else out
