"""Reading the suite's JSON log lines: who used which console, refusals, errors.

``analysis`` is the pure core (lines in, figures out), ``sources`` opens files, ``.gz``,
directories and stdin, ``report`` renders the HTML report; ``consolectl logs`` (ctl/logs.py)
is the shell around them.
"""
