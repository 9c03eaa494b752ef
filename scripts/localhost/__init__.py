"""A local host for the function app (`python -m scripts.serve`): HTTP, timer and queue triggers.

It serves what `function_app.py` registers, with real azure.functions objects, the way the Functions
host does with the same `host.json`. Where it knowingly differs: README, "Try the API locally".
"""
