"""Package layout: the card keeps ``export/`` and ``zoo/`` at the top level, imported as
``compressor.export`` and ``compressor.zoo``; setuptools finds every package under each root.
The zoo's data files (the everyday-English held-out set) are installed with it."""
from setuptools import find_packages, setup

ROOTS = {"compressor": "compressor", "compressor.export": "export", "compressor.zoo": "zoo"}

setup(package_dir=ROOTS,
      packages=[p for name, folder in ROOTS.items() for p in [name, *(f"{name}.{s}" for s in find_packages(folder))]],
      package_data={"compressor.zoo": ["data/*.txt"]})
