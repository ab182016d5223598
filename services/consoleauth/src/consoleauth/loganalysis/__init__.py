"""Reading the suite's JSON log lines: who used which console, refusals, errors.

``analysis`` is the pure core (lines in, figures out) with ``lines`` (one line's text:
compose prefix, times, messages), ``durations`` and ``rows`` (``sessions``' rows and
filters); ``sources`` opens files, ``.gz``, directories and stdin; ``report`` renders the
HTML report. ``consolectl logs`` (ctl/logs.py) is the shell around them.
"""
