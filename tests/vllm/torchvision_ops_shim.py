"""WORKAROUND for the vLLM test environment only (installed by `make test-vllm`, never by the package).

PyPI's torchvision for torch 2.13 is a CUDA build: beside the CPU torch its C++ ops fail to load,
and `import torchvision` then fails on `torch.library.register_fake("torchvision::nms")` ("operator
torchvision::nms does not exist"). vLLM's LLaVA imports torchvision (through the Pixtral processor),
and transformers' fast image processors use it. This module, imported from a .pth file of that venv
only when `import torchvision` fails there, defines the two missing schemas (as torchvision
declares them) just before torchvision is first imported. Nothing calls these ops in the tests.
"""
import importlib.abc
import sys

_LIBRARY = None


def _define_schemas():
    global _LIBRARY
    import torch

    _LIBRARY = torch.library.Library("torchvision", "DEF")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Defines the schemas when torchvision is first imported, then leaves the import to Python."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            _define_schemas()
        return None


sys.meta_path.insert(0, _BeforeTorchvision())
