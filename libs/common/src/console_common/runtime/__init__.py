"""Service start-up: options and config sources (``config``), structured logging
(``logging``), signals, graceful stop and process set-up (``service``).
"""
