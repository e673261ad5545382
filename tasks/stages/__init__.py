"""stages: the plumbing on top. `project` finds the project and reads params.yaml, `validate` checks
every value before any work, `data` and `models` are the stage functions DVC (through tasks/cli.py)
and Prefect (flows/) both call: each resolves a key to its params and folders and calls one package's
entry with plain values. Nothing under tasks/ imports this package; it is no stage's dep.
"""
