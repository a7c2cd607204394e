"""Print the environment cardd runs in: `python -m cardd_d2.collect_env`.

Versions of Python, torch, torchvision, detectron2 and the other libraries, the compute device, whether detectron2's
compiled extension (_C) is present and which deformable-convolution backend the deformable ResNet will use.
"""
import importlib
import platform
import sys


def _version(module_name):
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001  (report any import failure, it is what the user needs to see)
        return f"not importable ({type(e).__name__}: {e})"
    return getattr(module, "__version__", "unknown version")


def deform_backend() -> str:
    from cardd_d2.modeling.layers.deform_conv import deform_backend_info

    return deform_backend_info()["auto"]


def collect_env_info() -> list:
    from cardd_d2.modeling.layers.deform_conv import has_detectron2_C

    import torch

    rows = [
        ("Python", sys.version.split()[0]),
        ("platform", platform.platform()),
        ("torch", torch.__version__),
        ("torchvision", _version("torchvision")),
        ("detectron2", _version("detectron2")),
    ]
    try:
        import detectron2

        rows.append(("detectron2 path", detectron2.__path__[0]))
    except ImportError:
        pass
    rows += [
        ("detectron2 compiled _C", "yes" if has_detectron2_C() else "no (pure-Python detectron2)"),
        ("deformable conv backend (auto)", deform_backend()),
        ("CUDA available", str(torch.cuda.is_available())),
    ]
    if torch.cuda.is_available():
        rows += [(f"GPU {i}", torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]
        rows.append(("CUDA (torch build)", str(torch.version.cuda)))
    rows.append(("CPU threads (torch)", str(torch.get_num_threads())))
    for name in ("numpy", "pycocotools", "cv2", "PIL", "py_sod_metrics", "fvcore", "cardd_d2", "cardd_sod"):
        rows.append((name, _version(name)))
    return rows


def main():
    from tabulate import tabulate

    print(tabulate(collect_env_info(), tablefmt="simple"))


if __name__ == "__main__":
    main()
