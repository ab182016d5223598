"""fakecompute"""
