"""novncproxy"""
