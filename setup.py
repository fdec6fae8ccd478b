"""The one compiled part of fastmnist: the CPU training step in C (fastmnist/steps/compiled_step.c).

Everything else is declared in pyproject.toml. The extension is optional: where no C compiler
is found the build goes on without it, and training takes the NumPy step.
"""
import sys

from setuptools import Extension, setup

FLAGS = [] if sys.platform == "win32" else ["-O3", "-fno-math-errno", "-fno-trapping-math"]

setup(ext_modules=[Extension("fastmnist.steps._compiled_step",
                             sources=["fastmnist/steps/compiled_step.c"],
                             extra_compile_args=FLAGS, optional=True)])
