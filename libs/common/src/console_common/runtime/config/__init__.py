"""Configuration: Nova's option names, read from files, env and flags, validated, frozen.

    config, args = parse("novncproxy", "...", ["novncproxy_host", "novncproxy_port", ...])
    config.novncproxy_port  # -> 6080, validated
"""

from console_common.runtime.config.loader import (Config, ConfigError, add_option_arguments,
                                          flags_from_namespace, load, make_parser, parse)
from console_common.runtime.config.options import (BUS_CLIENT, COMMON, OPTIONS, PROXY,
                                                   RECORDING,
                                                   Option, select)

__all__ = ["BUS_CLIENT", "COMMON", "OPTIONS", "PROXY", "RECORDING", "Config", "ConfigError", "Option",
           "add_option_arguments", "flags_from_namespace", "load", "make_parser", "parse", "select"]
