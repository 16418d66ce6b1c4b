"""Installs the `wss` package (PseudoSeg for TensorFlow 2).

Only `wss` is installed: `datasets/` and `launch/` hold scripts that are run as
`python datasets/NAME.py` and `python launch/NAME.py`. The gin configs in
`gin_configs/` ship inside the package as `wss/gin_configs` so that
`--gin_file=NAME.gin` resolves from any working directory.
"""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _read_version():
    """Reads `__version__` from wss/__init__.py without importing TensorFlow."""
    with open(os.path.join(HERE, "wss", "__init__.py")) as f:
        for line in f:
            if line.startswith("__version__"):
                return line.split("=")[1].strip().strip("\"'")
    raise RuntimeError("wss/__init__.py defines no __version__")


setup(
    name="wss",
    version=_read_version(),
    description="PseudoSeg (ICLR 2021) semi- and weakly-supervised segmentation in TF2/Keras 3",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["wss", "wss.*"]),
    # The top-level gin_configs/ directory is exposed as the package data directory
    # wss/gin_configs (a symlink would not survive sdists on every platform).
    package_dir={"wss.gin_configs": "gin_configs"},
    package_data={"wss.gin_configs": ["*.gin"]},
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.16,<3",
        "tensorboard>=2.16",
        "gin-config>=0.5",
        "absl-py>=1.0",
        "numpy>=1.23",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3", "ruff>=0.4", "Pillow>=9", "scipy>=1.9",
                 "pycocotools>=2.0.6", "tensorflow-datasets>=4.9"],
        "data": ["Pillow>=9", "scipy>=1.9", "pycocotools>=2.0.6"],
        # TFDS datasets as streams (wss.data.tfds_source); mock data in the tests.
        "tfds": ["tensorflow-datasets>=4.9"],
        "plots": ["matplotlib>=3.5"],
    },
)
