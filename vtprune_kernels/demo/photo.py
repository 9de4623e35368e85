"""Real photos for the demo, from the files the ``scikit-image`` wheel carries (``skimage/data``).

The files are read with PIL through the installed package's metadata: scikit-image itself is
never imported. ``chelsea`` (a cat on a plain background) is the demo's default: one clear subject,
so the [CLS] attention of a real encoder has something to find.
"""
from __future__ import annotations

import importlib.metadata
import os

PHOTOS = {
    "chelsea": "skimage/data/chelsea.png",
    "astronaut": "skimage/data/astronaut.png",
    "coffee": "skimage/data/coffee.png",
    "rocket": "skimage/data/rocket.jpg",
    "motorcycle": "skimage/data/motorcycle_left.png",
}
DEFAULT_PHOTO = "chelsea"


class PhotoUnavailable(RuntimeError):
    """scikit-image (the photos' package) is not installed; the message says so."""


def photo_path(name: str = DEFAULT_PHOTO) -> str:
    """Path of one of ``PHOTOS`` inside the installed scikit-image package."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}: choose from {', '.join(PHOTOS)}")
    try:
        path = str(importlib.metadata.distribution("scikit-image").locate_file(PHOTOS[name]))
    except importlib.metadata.PackageNotFoundError:
        raise PhotoUnavailable("the scikit-image package (which ships the demo photos) is not installed") from None
    if not os.path.isfile(path):
        raise PhotoUnavailable(f"scikit-image is installed but {PHOTOS[name]} is missing ({path})")
    return path


def photo(name: str = DEFAULT_PHOTO):
    """The photo as an RGB PIL image (its own size; the processor resizes and crops it)."""
    from PIL import Image

    with Image.open(photo_path(name)) as image:
        return image.convert("RGB")
