"""consoleauth"""
