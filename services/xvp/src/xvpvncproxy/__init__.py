"""xvpvncproxy"""
