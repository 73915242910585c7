# The cffi extension is declared here because cffi_modules has no pyproject.toml form.
from setuptools import setup

setup(cffi_modules=["sakura_uring/_native/build.py:ffi"])
