"""console_common"""
__version__ = "0.1.0"
