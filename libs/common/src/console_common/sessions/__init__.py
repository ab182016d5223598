"""One admission and one session path for both proxies.

``admission.check_console_token`` turns a token into connect info or a typed denial;
``runner.SessionRegistry`` runs a session (registry, logs, metrics, relay, close reason);
``metrics.ProxyMetrics`` holds the ``console_*`` metrics both proxies expose. Each proxy keeps
only its own wire protocol and maps a denial to its own answer.
"""
