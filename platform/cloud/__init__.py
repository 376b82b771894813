"""Not code: makes pytest (import-mode=importlib) name these tests ``cloud.tests.*``.

Without it their module names would start with ``platform.``, and pytest would replace the
standard library's ``platform`` module with this folder for the whole test session.
"""
