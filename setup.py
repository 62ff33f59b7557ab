"""Builds the optional C speed-up of the envelope checks; everything else is in pyproject.toml.

``optional=True``: without a C compiler the install still succeeds, and
wsguard uses the pure-Python functions that the extension mirrors.
"""

from __future__ import annotations

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "wsguard.core._envelope_scan",
            ["src/wsguard/core/_envelope_scan.c"],
            optional=True,
        )
    ]
)
