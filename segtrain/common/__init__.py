"""Torch-free plumbing that both command lines and both installs use.

Errors and exit codes, limits, files, the machine, optional extras, JSON shapes, command-line support.
"""
