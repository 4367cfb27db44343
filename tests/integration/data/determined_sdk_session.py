"""Run by Determined 0.38.1's own Python (``$FLOTILLA_DETERMINED_VENV``) against a Flotilla
master, the way a data scientist's notebook uses ``determined.experimental.client``.

Arguments: master URL, model directory, download directory. Prints one JSON object with what
each call returned, for tests/integration/test_determined_sdk.py to check. Any call that fails
raises, and the test fails with the traceback.
"""

from __future__ import annotations

import json
import pathlib
import sys

from determined.common.api import bindings
from determined.experimental import client

master, model_dir, download_dir = sys.argv[1:4]
client.login(master=master, user="admin", password="")
admin = client.get_user_by_name("admin")

config = {
    "name": "sdk experiment",
    "entrypoint": "python fake_trial.py",
    "searcher": {
        "name": "grid",
        "metric": "validation_loss",
        "smaller_is_better": True,
        "max_length": {"batches": 2},
    },
    "hyperparameters": {"x": {"type": "categorical", "vals": [1, 2]}},
    "max_restarts": 0,
}
experiment = client.create_experiment(config, model_dir)
final_state = experiment.wait(interval=0.5)
trials = experiment.list_trials()
best_first = experiment.list_checkpoints(
    sort_by=client.CheckpointSortBy.SEARCHER_METRIC, order_by=client.OrderBy.ASC
)
default_order = experiment.list_checkpoints()  # Determined's default: the searcher metric
best = best_first[0]
target = pathlib.Path(download_dir) / "best"
best.download(path=str(target), mode=client.DownloadMode.MASTER)
validations = list(trials[0].iter_metrics("validation"))
agents = bindings.get_GetAgents(client._determined._session).agents

model = client.create_model("sdk-model", description="from the SDK")
model.add_metadata({"framework": "fake"})
version = model.register_version(best.uuid)
model.set_labels(["sdk", "digits"])
again = client.get_model("sdk-model")
latest = again.get_version()

print(
    json.dumps(
        {
            "user": [admin.username, admin.admin],
            "experiment": experiment.id,
            "state": final_state.value,
            "trials": sorted(t.id for t in trials),
            "checkpoints": [
                [
                    c.uuid,
                    (c.training.validation_metrics or {})
                    .get("avgMetrics", {})
                    .get("validation_loss")
                    if c.training
                    else None,
                ]
                for c in best_first
            ],
            "default_order": [c.uuid for c in default_order],
            "downloaded": sorted(p.name for p in target.iterdir()),
            "validations": [[m.steps_completed, m.metrics] for m in validations],
            "agents": [a.id for a in agents],
            "model": [again.name, again.metadata, again.labels, again.description],
            "version": [
                version.model_version,
                version.checkpoint.uuid if version.checkpoint else None,
            ],
            "latest": latest.model_version if latest else None,
            "models": [m.name for m in client.list_models()],
        }
    )
)
