"""The optional C speedups of runstore (`runstore/_speedups.c`); everything else is in
pyproject.toml. `optional=True`: without a C compiler runstore installs as pure Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "runstore._speedups",
            sources=["runstore/_speedups.c"],
            optional=True,
        )
    ]
)
