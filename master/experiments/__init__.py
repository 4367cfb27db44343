"""Experiments: hyperparameter searches run as trials (docs/design/experiments.md).

- ``states``: Determined's experiment and trial states and the pure rules between them;
- ``search``: a search in progress, the searcher plus each trial's pending operations (pure);
- ``engine``: the one asyncio owner of unfinished experiments, fed by the REST API and the
  scheduler; ``live`` holds its memory and events, ``store`` its transactions, ``runs``
  launches and preempts trial runs, ``plan`` decides what each event does, ``restore``
  rebuilds after a restart;
- ``launch``: what a trial run gets on its agent; ``signals``: preemption flags;
- ``gc``: deleting checkpoints no ``save_*`` policy keeps; ``views``: Determined's JSON shapes;
- ``warm_start``: checking and resolving ``searcher.source_*``, the checkpoint trials start from.
"""
