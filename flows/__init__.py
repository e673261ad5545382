"""Prefect 3 flows: thin wrappers around the functions in `tasks`.

Importing the package sets what a run prints (tasks/stages/console.py) before anything loads
TensorFlow, so a deployment's worker process is as quiet as `tlpipe`; TLPIPE_VERBOSE=1 for more.
"""
from tasks.stages import console as _console

_console.configure()
