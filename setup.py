from setuptools import find_packages, setup

setup(
    name="cardd",
    version="0.1.0",
    description="CarDD car-damage detection, segmentation and salient-damage maps on Detectron2",
    packages=find_packages(include=["cardd_d2", "cardd_d2.*", "cardd_sod", "cardd_sod.*"]),
    package_data={"cardd_d2.assessment": ["report_schema.json"]},
    python_requires=">=3.10",
    # torch, torchvision and detectron2 are installed by scripts/setup_env.sh (see README).
    install_requires=[
        "numpy", "pycocotools", "opencv-python-headless", "Pillow", "tqdm", "matplotlib", "pysodmetrics", "pyyaml",
    ],
    extras_require={"serve": ["fastapi", "uvicorn", "python-multipart"]},
    py_modules=["cardd_cli"],  # the console script; outside cardd_d2 so that --help needs no torch
    entry_points={"console_scripts": ["cardd=cardd_cli:main"]},
)
