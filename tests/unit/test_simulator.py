"""The simulator's pieces that could be silently wrong: billing, the lower bound, the inputs,
percentiles, and the accounting of one job through the real decider."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from bench.baseline import DeterminedPolicy
from bench.cloud import SimCloud
from bench.simulation import CHECKPOINT_S, Simulation
from bench.simulator import main, offers_for, scenarios
from bench.workload import (
    DEFAULT_PROFILE,
    DEFAULT_TRACE,
    CloudProfile,
    InstanceType,
    Job,
    billed_seconds,
    load_profile,
    load_trace,
    lower_bound,
    percentile,
)
from provisioner.config import AWSProviderConfig, ProviderConfig
from provisioner.decider import ScaleDecider
from provisioner.types import InstanceState, Market, Offer

# Boot takes exactly 100 s (median = p95), nothing fails, nothing is interrupted.
STEADY = CloudProfile(
    instance_types={"g5.xlarge": InstanceType("g5.xlarge", 1, 3.6, 1.8)},
    boot_median_s=100,
    boot_p95_s=100,
    spot_hazard_per_hour=0.0,
    spot_notice_s=120,
    spot_capacity_error=0.0,
    on_demand_capacity_error=0.0,
    billing_granularity_s=1,
    billing_minimum_s=60,
)
OFFER = Offer("g5.xlarge", "us-east-1a", Market.ON_DEMAND, 3.6, 1)  # $0.001 a second


def pool(**fields: object) -> ProviderConfig:
    return AWSProviderConfig.model_validate(
        # No boot racing: these tests follow one instance's bill.
        {"type": "aws", "image_id": "ami-x", "instance_type": "g5.xlarge", "boot_hedge": 0} | fields
    )


@pytest.mark.parametrize(
    ("run_s", "granularity", "minimum", "billed"),
    [(10, 1, 60, 60), (60, 1, 60, 60), (60.2, 1, 60, 61), (61, 60, 0, 120), (3600, 3600, 0, 3600)],
)
def test_billing_rounds_up_and_charges_the_minimum(
    run_s: float, granularity: float, minimum: float, billed: float
) -> None:
    assert billed_seconds(run_s, granularity, minimum) == billed


def test_lower_bound_is_slot_seconds_at_the_cheapest_price() -> None:
    jobs = [Job("a", 0, "trial", 2, 100, 42), Job("b", 5, "command", 1, 50, 42)]
    assert lower_bound(jobs, 0.01) == pytest.approx(2.5)


def test_lower_bound_uses_the_cheapest_slot_second_among_the_offers() -> None:
    profile = load_profile()
    offers = offers_for(profile, "g5.xlarge", [Market.SPOT, Market.ON_DEMAND])
    config = scenarios(profile, "g5.xlarge", 10)[1].config
    jobs = [Job("a", 0, "trial", 1, 3600, 42)]
    result = Simulation(jobs, profile, config, offers, ScaleDecider(), seed=3).run()
    assert result.lower_bound == pytest.approx(0.402)


def test_trace_loader_reads_every_job_in_submission_order() -> None:
    jobs = load_trace(DEFAULT_TRACE)
    assert len(jobs) == 1060
    assert jobs[0] == Job("j1", 866, "trial", 1, 2373, 42, "e1")
    assert [j.submit_s for j in jobs] == sorted(j.submit_s for j in jobs)
    assert {j.kind for j in jobs} == {"trial", "command", "notebook"}


def test_trace_loader_names_the_bad_line(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    good = {"id": "a", "submit_s": 0, "kind": "trial", "slots": 1, "duration_s": 5, "priority": 1}
    trace.write_text(json.dumps(good) + "\n\n" + json.dumps({"id": "b"}) + "\n")
    with pytest.raises(ValueError, match=r"t\.jsonl:3: bad job"):
        load_trace(trace)


def test_bundled_inputs_are_the_shared_copies() -> None:
    shared = Path("/work/shared/traces")
    if not shared.exists():
        pytest.skip("no shared traces on this machine")
    for name, copy in (("week.jsonl", DEFAULT_TRACE), ("cloud_profile.json", DEFAULT_PROFILE)):
        assert (shared / name).read_bytes() == copy.read_bytes()


def test_profile_boot_lognormal_has_the_given_median_and_p95() -> None:
    profile = load_profile()
    mu, sigma = profile.boot_lognormal
    assert math.exp(mu) == pytest.approx(90)
    assert math.exp(mu + 1.6448536 * sigma) == pytest.approx(240)
    assert profile.billing_minimum_s == 60 and profile.spot_notice_s == 120


def test_percentile_interpolates() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([], 95) == 0.0 and percentile([7.0], 95) == 7.0


def test_one_job_through_the_real_decider_is_billed_from_launch_to_termination() -> None:
    config = pool(max_idle_agent_period="60s")
    jobs = [Job("j", 0, "trial", 1, 600, 42)]
    result = Simulation(jobs, STEADY, config, [OFFER], ScaleDecider(), seed=1).run()
    # launched at 0 (the submit pass), joined at 100, job ends at 700, idle 60 s → drained at
    # the 760 s tick, terminated at the next one (765 s).
    assert result.launches == 1
    assert result.wait_p95_s == pytest.approx(100)
    assert result.cost == pytest.approx(0.765)
    assert result.lower_bound == pytest.approx(0.6)
    assert result.idle_fraction == pytest.approx(1 - 600 / 765)


def test_a_pool_that_never_shrinks_is_billed_until_an_hour_after_the_last_job() -> None:
    config = pool(max_idle_agent_period="off")
    jobs = [Job("j", 0, "trial", 1, 600, 42)]
    result = Simulation(jobs, STEADY, config, [OFFER], ScaleDecider(), seed=1).run()
    assert result.cost == pytest.approx(0.700 + 3.600)


def test_the_baseline_terminates_without_draining() -> None:
    config = pool(max_idle_agent_period="60s")
    jobs = [Job("j", 0, "trial", 1, 600, 42)]
    result = Simulation(jobs, STEADY, config, [OFFER], DeterminedPolicy(), seed=1).run()
    assert result.cost == pytest.approx(0.760)


def test_a_short_job_pays_the_billing_minimum() -> None:
    cloud = SimCloud(replace(STEADY, boot_median_s=1, boot_p95_s=1), seed=1)
    (instance,) = cloud.launch(OFFER, 1, now_s=0)
    cloud.end(instance, now_s=10)
    assert cloud.bill.cost == pytest.approx(0.060)
    assert instance.state is InstanceState.TERMINATED


def test_an_interrupted_job_loses_the_work_since_its_last_checkpoint() -> None:
    spot = replace(OFFER, market=Market.SPOT)
    jobs = [Job("j", 0, "trial", 2, 3600, 42)]
    sim = Simulation(jobs, STEADY, pool(spot=True), [spot], ScaleDecider(), seed=1)
    sim._on_submit(sim.jobs[0])
    assert len(sim.instances) == 2
    sim.now_s = 100
    for instance in list(sim.instances.values()):
        sim._on_boot(instance)
    sim.now_s = 100 + CHECKPOINT_S + 250  # 850 s of progress: one checkpoint, 250 s lost
    sim._on_notice(next(iter(sim.instances.values())))
    run = sim.jobs[0]
    assert run.checkpointed_s == CHECKPOINT_S and run.started_s is None
    assert sim.lost_slot_s == pytest.approx(250 * 2)
    assert [r.job.id for *_, r in sim.queue] == ["j"]
    assert sim.cloud.bill.interruptions == 1


@pytest.mark.parametrize(
    ("checkpoint_s", "checkpointed", "lost_per_slot"),
    [(14.0, CHECKPOINT_S + 250, 14.0), (130.0, CHECKPOINT_S, 250.0)],
)
def test_with_notice_handling_a_job_checkpoints_at_the_notice_when_it_fits(
    checkpoint_s: float, checkpointed: float, lost_per_slot: float
) -> None:
    """A 14 s checkpoint fits the 120 s notice: only its own time is lost. A 130 s one does
    not: the job loses the work since its last periodic checkpoint, as without the handling."""
    spot = replace(OFFER, market=Market.SPOT)
    jobs = [Job("j", 0, "trial", 2, 3600, 42)]
    sim = Simulation(
        jobs, STEADY, pool(spot=True), [spot], ScaleDecider(), seed=1,
        notice_checkpoint_s=checkpoint_s,
    )  # fmt: skip
    sim._on_submit(sim.jobs[0])
    sim.now_s = 100
    for instance in list(sim.instances.values()):
        sim._on_boot(instance)
    sim.now_s = 100 + CHECKPOINT_S + 250
    sim._on_notice(next(iter(sim.instances.values())))
    assert sim.jobs[0].checkpointed_s == checkpointed
    assert sim.lost_slot_s == pytest.approx(lost_per_slot * 2)


def test_command_line_prints_a_table_for_a_small_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "small.jsonl"
    trace.write_text("\n".join(DEFAULT_TRACE.read_text().splitlines()[:40]) + "\n")
    assert main(["--trace", str(trace), "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("| on-demand g5.xlarge |") == 3
    assert "of Determined@20m's" in out and "vs Determined@20m" in out


def test_json_rows_carry_the_issue_keys_and_the_sweep_draws_the_frontier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "small.jsonl"
    trace.write_text("\n".join(DEFAULT_TRACE.read_text().splitlines()[:40]) + "\n")
    plot = tmp_path / "frontier.png"
    argv = ["--trace", str(trace), "--seed", "2", "--json", "--scenarios", "on-demand"]
    assert main([*argv, "--sweep-idle", "1m,20m", "--plot", str(plot)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["policy"], r["max_idle"]) for r in rows] == [
        ("Determined", "1m"),
        ("Determined", "20m"),
        ("ScaleDecider", "auto"),
        ("ScaleDecider", "1m"),
        ("ScaleDecider", "20m"),
    ]
    keys = {"scenario", "policy", "max_idle", "cost", "lower_bound", "ratio", "wait_p50_s"}
    keys |= {"wait_p95_s", "launches", "slot_h_lost", "rejected"}
    assert all(keys <= row.keys() for row in rows)
    assert all(
        row["ratio"] == pytest.approx(row["cost"] / row["lower_bound"], rel=0.01) for row in rows
    )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = tmp_path / "rows.jsonl"
    saved.write_text("".join(json.dumps(row) + "\n" for row in rows))
    again = tmp_path / "again.png"
    assert main(["--replot", str(saved), "--plot", str(again)]) == 0
    assert again.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_gcp_profile_has_a_30_s_notice_and_a_minute_minimum() -> None:
    profile = load_profile(DEFAULT_PROFILE.parent / "gcp_profile.json")
    assert profile.spot_notice_s == 30
    assert (profile.billing_granularity_s, profile.billing_minimum_s) == (1, 60)
    assert billed_seconds(10, profile.billing_granularity_s, profile.billing_minimum_s) == 60
