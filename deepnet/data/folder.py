"""A user's own images: a folder with one sub-folder per class.

::

    my-images/                 or   my-images/
      cats/ a.png b.jpg ...           train/ cats/ ... dogs/ ...
      dogs/ ...                       test/  cats/ ... dogs/ ...
                                      val/   cats/ ... dogs/ ...   (optional)

Without ``train/``/``test/`` sub-folders, a seeded test and validation split is carved out.
Images are read with Pillow (PNG, JPEG, BMP, GIF), turned grey or colour, resized to
``image_size`` when given, scaled to [0, 1] and standardised with the training split's
per-channel mean and std — the same steps ``deepnet predict`` applies to a new image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from deepnet.data._dataset import Dataset, Split
from deepnet.data._paths import DataError
from deepnet.data.vision import normalize_images, split_train_val

__all__ = ["IMAGE_SUFFIXES", "load_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"Image folder {root} has no class sub-folders; expected {root}/<class name>/<image>.png, "
                        "one sub-folder per class.")
    return folders


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"Class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}). "
                        "Add images to it or remove the folder.")
    return files


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path} is not a readable image ({err}). Delete or replace the file.") from None
    return image


def _read_images(files: list[Path], channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """``(N, C, H, W)`` uint8; every image resized to ``size`` (H, W) or all of one size."""
    arrays, first = [], None
    for path in files:
        image = _open(path).convert("L" if channels == 1 else "RGB")
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]))  # the resize `deepnet predict` applies too
        elif size is None:
            if first is None:
                first = (path, image.size)
            elif image.size != first[1]:
                raise DataError(
                    f"Images have different sizes: {first[0]} is {first[1][0]}x{first[1][1]} but {path} is "
                    f"{image.size[0]}x{image.size[1]}. Set data.image_size (e.g. data.image_size={first[1][1]}) "
                    "to resize them all.")
        array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    return np.stack(arrays)


def _listing(root: Path, class_names: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    folders = _class_folders(root)
    names = [f.name for f in folders]
    if class_names is not None and names != class_names:
        raise DataError(f"{root} has the class folders {names}, but the training folder has {class_names}. "
                        "Every split needs the same class folders.")
    files, labels = [], []
    for label, folder in enumerate(folders):
        found = _image_files(folder)
        files += found
        labels += [label] * len(found)
    return files, labels, names


def _channels(files: list[Path]) -> int:
    """1 when every image is grey, else 3 (a colour image among grey ones makes all colour)."""
    for path in files:
        if _open(path).mode not in _GREY_MODES:
            return 3
    return 1


def load_image_folder(root: str | os.PathLike, *, image_size: int | tuple[int, int] | list[int] | None = None,
                      channels: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
                      seed: int = 0) -> Dataset:
    """A classification dataset from ``root/<class>/<image>`` (or ``root/{train,val,test}/<class>/``).

    ``image_size``: an int (square) or (height, width); without it all images must share a size.
    ``channels``: 1 (grey) or 3 (colour); by default grey when every image is grey.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Image folder {root} not found. Check the path given as data.name / --data.")
    if channels not in (None, 1, 3):
        raise DataError(f"data.channels must be 1 (grey) or 3 (colour); received {channels}.")
    size = None if image_size is None else (
        (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(int(s) for s in image_size))
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise DataError(f"data.image_size must be a positive int or [height, width]; received {image_size!r}.")
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    parts = {"train": root / "train", "test": root / "test"} if presplit else {"all": root}
    if presplit and (root / "val").is_dir():
        parts["val"] = root / "val"
    listings, names = {}, None
    for part, folder in parts.items():
        files, labels, names = _listing(folder, names)
        listings[part] = (files, labels)
    if channels is None:
        channels = _channels([f for files, _ in listings.values() for f in files])
    tensors = {}
    for part, (files, labels) in listings.items():
        x = torch.from_numpy(_read_images(files, channels, size))
        tensors[part] = (x, torch.tensor(labels, dtype=torch.int64))
    shapes = {part: tuple(x.shape[1:]) for part, (x, _) in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"The splits hold images of different sizes {shapes}. Set data.image_size to resize them all.")
    if presplit:
        test = Split(*tensors["test"])
        if "val" in tensors:
            train, val = Split(*tensors["train"]), Split(*tensors["val"])
        else:
            train, val = split_train_val(*tensors["train"], val_fraction, seed)
    else:
        x, y = tensors["all"]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 1))
        n_test = int(round(len(x) * test_fraction))
        test = Split(x[order[:n_test]], y[order[:n_test]])
        train, val = split_train_val(x[order[n_test:]], y[order[n_test:]], val_fraction, seed)
    if len(train) == 0:
        raise DataError(f"{root} leaves no training images after the test/validation split; add images.")
    prep = normalize_images(train, val, test, scale=255.0)
    return Dataset(root.name, train, val, test, input_shape=tuple(train.x.shape[1:]), num_classes=len(names),
                   class_names=names, preprocessing=prep, input_kind="image")
