"""Package layout: the card keeps ``export/`` and ``zoo/`` at the top level, imported as
``compressor.export`` and ``compressor.zoo``; setuptools finds every package under each root."""
from setuptools import find_packages, setup

ROOTS = {"compressor": "compressor", "compressor.export": "export", "compressor.zoo": "zoo"}

setup(package_dir=ROOTS,
      packages=[p for name, folder in ROOTS.items() for p in [name, *(f"{name}.{s}" for s in find_packages(folder))]])
