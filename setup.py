"""Builds the optional C speed-ups; everything else is in pyproject.toml.

Four extensions: the envelope's fast-path checks, the attack-signature
prefilter, the simple-markup path of HTML cleaning and the text of a common
audit record. ``optional=True``: without a C compiler the install still succeeds,
and wsguard uses the pure-Python paths that the extensions stand in for.
"""

from __future__ import annotations

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "wsguard.core._envelope_scan",
            ["src/wsguard/core/_envelope_scan.c"],
            optional=True,
        ),
        Extension(
            "wsguard.core._signature_scan",
            ["src/wsguard/core/_signature_scan.c"],
            depends=["src/wsguard/core/_text_scan.h"],
            optional=True,
        ),
        Extension(
            "wsguard.core._simple_html",
            ["src/wsguard/core/_simple_html.c"],
            depends=["src/wsguard/core/_text_scan.h"],
            optional=True,
        ),
        Extension(
            "wsguard.audit._record_text",
            ["src/wsguard/audit/_record_text.c"],
            optional=True,
        ),
    ]
)
