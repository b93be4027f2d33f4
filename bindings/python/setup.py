"""Installs the ``admit`` package (cffi out-of-line API mode over libadmit).

Build it with Debian's python3-cffi and python3-setuptools, without build
isolation (nothing is downloaded)::

    /usr/bin/python3 -m pip install --no-build-isolation ./bindings/python

See admit_build.py for where libadmit is taken from.
"""

from setuptools import setup

setup(
    name="admit",
    version="0.1.0",
    description="Rate limiting and admission control over libadmit (cffi)",
    packages=["admit"],
    package_data={"admit": ["py.typed"]},
    python_requires=">=3.9",
    install_requires=["cffi>=1.12"],
    cffi_modules=["admit_build.py:ffibuilder"],
    zip_safe=False,
)
