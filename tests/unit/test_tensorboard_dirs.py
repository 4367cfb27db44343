"""Which event files a TensorBoard shows, and errors that say what is missing without showing
where the master keeps them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from master import models
from master.api.errors import ApiError
from master.api.services import tensorboard_dirs


def known(
    experiments: set[int], trials: set[int]
) -> Callable[[type[models.Experiment] | type[models.Trial], int], bool]:
    def exists(model: type[models.Experiment] | type[models.Trial], row_id: int) -> bool:
        return row_id in (experiments if model is models.Experiment else trials)

    return exists


def test_dirs_name_each_experiment_and_trial(tmp_path: Path) -> None:
    (tmp_path / "experiment" / "7" / "trial" / "3").mkdir(parents=True)
    runs = tensorboard_dirs(tmp_path, [7], [3], known(set(), set()))
    assert runs == [
        f"experiment-7={tmp_path / 'experiment' / '7'}",
        f"trial-3={tmp_path / 'experiment' / '7' / 'trial' / '3'}",
    ]


@pytest.mark.parametrize(
    ("experiments", "trials", "message"),
    [
        ([999], [], "experiment 999 does not exist"),
        ([5], [], "experiment 5 has no TensorBoard event files yet"),
        ([], [998], "trial 998 does not exist"),
        ([], [4], "trial 4 has no TensorBoard event files yet"),
    ],
)
def test_missing_event_files_say_why_without_a_server_path(
    tmp_path: Path, experiments: list[int], trials: list[int], message: str
) -> None:
    with pytest.raises(ApiError) as caught:
        tensorboard_dirs(tmp_path, experiments, trials, known({5}, {4}))
    assert caught.value.status == 404
    assert caught.value.message.startswith(message)
    assert str(tmp_path) not in caught.value.message
