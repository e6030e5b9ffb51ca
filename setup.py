"""Build ssdk: a pure-Python package plus, when possible, the CUDA extension ``ssdk._C``.

The extension is configured with CMake (ninja generator) against the torch that runs the build.
Knobs (environment):
  SSDK_BUILD_CUDA   auto (default) | 0 | 1. auto = torch has CUDA (torch.version.cuda) and nvcc exists.
  SSDK_CUDA_ARCHS   e.g. "9.0a" or "8.0;9.0a"; default: the visible GPU's arch, else 9.0a.
  SSDK_CUTLASS_DIR  CUTLASS source root (holding include/cute); default: the nvidia-cutlass wheel.
  MAX_JOBS          parallel compile jobs; default from cores and free memory.
The build writes ssdk/_build_config.py describing what was built.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent.resolve()
GB = 1 << 30


def _cuda_home() -> Path | None:
    """First of CUDA_HOME, CUDA_PATH, nvcc's toolkit, /usr/local/cuda that holds nvcc and the headers."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates.append("/usr/local/cuda")
    for home in filter(None, candidates):
        if (Path(home) / "bin" / "nvcc").exists() and (Path(home) / "include" / "cuda_runtime.h").exists():
            return Path(home)
    return None


def _nvcc() -> Path | None:
    home = _cuda_home()
    return home / "bin" / "nvcc" if home else None


def _cuda_decision() -> tuple[bool, str]:
    """Whether to build the CUDA extension, and why."""
    mode = os.environ.get("SSDK_BUILD_CUDA", "auto").lower()
    if mode not in ("auto", "0", "1"):
        raise ValueError(f"SSDK_BUILD_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode == "0":
        return False, "SSDK_BUILD_CUDA=0"
    try:
        import torch
    except ImportError:
        if mode == "1":
            raise RuntimeError("SSDK_BUILD_CUDA=1 but torch is not importable in the build environment")
        return False, "torch not importable at build time"
    problems = []
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is a CPU build")
    if _nvcc() is None:
        problems.append("nvcc not found (set CUDA_HOME)")
    if problems:
        if mode == "1":
            raise RuntimeError("SSDK_BUILD_CUDA=1 but " + "; ".join(problems))
        return False, "; ".join(problems)
    return True, f"torch {torch.__version__} (CUDA {torch.version.cuda}) + {_nvcc()}"


def _cuda_archs() -> str:
    """Architectures as CMake wants them: '9.0a;8.0' -> '90a;80'."""
    archs = os.environ.get("SSDK_CUDA_ARCHS")
    if not archs:
        archs = "9.0a"
        try:
            import torch

            if torch.cuda.is_available():
                major, minor = torch.cuda.get_device_capability()
                archs = f"{major}.{minor}" + ("a" if major == 9 else "")
        except Exception:  # a broken driver must not break the build
            pass
    out = []
    for arch in archs.replace(",", ";").split(";"):
        arch = arch.strip()
        if arch:
            out.append(arch.replace(".", ""))
    return ";".join(out)


def _cutlass_dir() -> str | None:
    """CUTLASS source root: SSDK_CUTLASS_DIR, else the nvidia-cutlass wheel (found without importing it)."""
    env = os.environ.get("SSDK_CUTLASS_DIR")
    if env:
        if not (Path(env) / "include" / "cute").is_dir():
            raise RuntimeError(f"SSDK_CUTLASS_DIR={env} has no include/cute")
        return env
    spec = importlib.util.find_spec("cutlass_library")
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            src = Path(loc) / "source"
            if (src / "include" / "cute").is_dir():
                return str(src)
    return None


def _max_jobs() -> int:
    if os.environ.get("MAX_JOBS"):
        return max(1, int(os.environ["MAX_JOBS"]))
    cores = os.cpu_count() or 1
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        by_memory = max(1, int(free // (3 * GB)))  # nvcc on torch headers peaks near 3 GB
    except (ValueError, OSError):
        by_memory = cores
    return max(1, min(cores, by_memory))


def _loaded_libstdcxx() -> str | None:
    """Path of the libstdc++ that torch runs with (Linux), so _C links the same shared library.

    Some toolchains (e.g. a GCC under /opt) link libstdc++ statically by default; a second, static
    copy inside _C has uninitialized stream locales and crashes when an error message is formatted.
    """
    import torch  # noqa: F401  (loads libstdc++)

    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "libstdc++.so" in path:
                    return path
    except OSError:
        pass
    return None


def _write_build_config(pkg_dir: Path, config: dict) -> None:
    pkg_dir.mkdir(parents=True, exist_ok=True)
    lines = ['"""Written by setup.py at build time; do not edit."""', ""]
    lines += [f"{key} = {value!r}" for key, value in config.items()]
    (pkg_dir / "_build_config.py").write_text("\n".join(lines) + "\n")


def _base_config(reason: str) -> dict:
    try:
        import torch

        torch_version, torch_cuda = torch.__version__, torch.version.cuda
    except ImportError:
        torch_version, torch_cuda = None, None
    return {
        "cuda_built": False,
        "reason": reason,
        "torch_version": torch_version,
        "torch_cuda": torch_cuda,
        "cuda_archs": None,
        "nvcc": None,
        "cutlass_dir": _cutlass_dir(),
    }


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class BuildExt(build_ext):
    def run(self) -> None:
        build_cuda, reason = _cuda_decision()
        config = _base_config(reason)
        pkg_dir = Path(self.get_ext_fullpath("ssdk._C")).parent
        if not build_cuda:
            print(f"ssdk: building without the CUDA extension ({reason})")
            _write_build_config(pkg_dir, config)
            _write_build_config(ROOT / "python" / "ssdk", config)
            return
        config.update(cuda_built=True, cuda_archs=_cuda_archs(), nvcc=str(_nvcc()))
        self._cmake_build(pkg_dir, config)
        _write_build_config(pkg_dir, config)
        _write_build_config(ROOT / "python" / "ssdk", config)

    def _cmake_build(self, pkg_dir: Path, config: dict) -> None:
        import pybind11
        import torch
        from torch.utils import cpp_extension

        build_temp = Path(self.build_temp) / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        cuda_home = _cuda_home()
        args = [
            f"-S{ROOT}",
            f"-B{build_temp}",
            "-GNinja",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_PREFIX_PATH={pybind11.get_cmake_dir()}",
            f"-DSSDK_TORCH_INCLUDE_DIRS={';'.join(cpp_extension.include_paths())}",
            f"-DSSDK_TORCH_LIBRARY_DIR={cpp_extension.library_paths()[0]}",
            f"-DSSDK_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
            f"-DCMAKE_CUDA_COMPILER={config['nvcc']}",
            f"-DCUDAToolkit_ROOT={cuda_home}",
            f"-DSSDK_CUDA_ARCHS={config['cuda_archs']}",
            f"-DSSDK_TORCH_VERSION={config['torch_version']}",
            f"-DSSDK_OUTPUT_DIR={pkg_dir.resolve()}",
        ]
        if config["cutlass_dir"]:
            args.append(f"-DSSDK_CUTLASS_DIR={config['cutlass_dir']}")
        libstdcxx = _loaded_libstdcxx()
        if libstdcxx:
            args.append(f"-DSSDK_LIBSTDCXX={libstdcxx}")
        jobs = _max_jobs()
        print(f"ssdk: building the CUDA extension for {config['cuda_archs']} with {jobs} jobs; "
              f"CUTLASS: {config['cutlass_dir'] or 'not found'}")
        cmake = shutil.which("cmake") or "cmake"
        subprocess.run([cmake, *args], check=True)
        subprocess.run([cmake, "--build", str(build_temp), "-j", str(jobs)], check=True)


class BuildPy(build_py):
    """Also ship an (unbuilt) build config when build_ext is not run."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "ssdk" / "_build_config.py"
        if not target.exists():
            _write_build_config(target.parent, _base_config("build_ext not run"))


setup(
    packages=["ssdk", "ssdk.triton_kernels"] + [f"ssdk.{p}" for p in find_packages("python/ssdk")],
    package_dir={"ssdk": "python/ssdk", "ssdk.triton_kernels": "triton_kernels"},
    ext_modules=[CMakeExtension("ssdk._C")],
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
)
