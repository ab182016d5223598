"""Hypothesis profiles for the fuzz targets, chosen by ``CONSOLE_FUZZ_PROFILE``.

``test`` (the default, `make test`): 1 000 inputs per test function (2 000-3 000 per
target), the whole directory in about 25 s. ``soak`` (`make soak`): 100 000 per function.
``CONSOLE_FUZZ_EXAMPLES`` overrides the count of either (e.g. a quick local run). No example database is written:
a failure prints its input (and the seed to replay it), which is what a reviewer needs.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COUNTS = {"test": 1000, "soak": 100_000}  # per test function; 2-3 functions a target
_PROFILE = os.environ.get("CONSOLE_FUZZ_PROFILE", "test")
if _PROFILE not in _COUNTS:
    raise RuntimeError(f"CONSOLE_FUZZ_PROFILE must be one of {sorted(_COUNTS)}, not {_PROFILE!r}")

for _name, _count in _COUNTS.items():
    settings.register_profile(
        _name,
        max_examples=int(os.environ.get("CONSOLE_FUZZ_EXAMPLES", _count)),
        deadline=None,  # 2 shared cores: timing is not what these tests judge
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much],
        print_blob=True,
    )
settings.load_profile(_PROFILE)
