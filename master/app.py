"""The master's FastAPI application and its start/stop sequence."""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from master import __version__, agent_link, cloudwatch_logs, models, proxy, proxy_ws
from master.api import (
    agents,
    allocations,
    auth,
    checkpoint_download,
    checkpoints,
    cluster,
    commands,
    console,
    cost,
    debug,
    errors,
    experiment_continue,
    experiment_edit,
    experiments,
    fleet,
    master_logs,
    metric_series,
    openapi,
    preemption,
    registry,
    registry_versions,
    resource_pools,
    services,
    tasks,
    trial_metrics_stream,
    trial_reports,
    trials,
    users,
    workspaces,
)
from master.api.body import BodyLimitMiddleware, JsonBodyMiddleware, check_int_params
from master.config import MasterConfig
from master.db import Database, migrate
from master.experiments.engine import ExperimentEngine
from master.idle import IdleWatcher
from master.log_buffer import MasterLogBuffer
from master.login_guard import LoginGuard
from master.logs import LogStore
from master.provisioning import Provisioning
from master.rendezvous import Rendezvous
from master.scheduler.loop import Scheduler
from master.state import MasterState, utc_now

log = logging.getLogger(__name__)
# Allocations between young collections, and young (then middle) collections between older
# ones (Python's defaults: 700, 10, 10).
GC_THRESHOLDS = (10_000, 50, 100)
DEFAULT_USERS = (("admin", True), ("determined", False))


def bootstrap(session: Session) -> str:
    """First start: the cluster's id and the blank-password users ``admin`` and ``determined``."""
    cluster = session.get(models.Cluster, 1)
    if cluster is None:
        cluster = models.Cluster(id=1, cluster_id=str(uuid.uuid4()), created_at=utc_now())
        session.add(cluster)
        if not session.scalar(select(func.count()).select_from(models.User)):
            for username, admin in DEFAULT_USERS:
                session.add(models.User(username=username, admin=admin, password_hash=None))
    return cluster.cluster_id


def users_without_password(session: Session) -> list[str]:
    """Active users anyone may log in as (blank password), as Determined leaves ``admin`` and
    ``determined`` until an operator sets theirs."""
    query = select(models.User.username).where(
        models.User.active.is_(True), models.User.password_hash.is_(None)
    )
    return sorted(session.scalars(query))


def create_app(config: MasterConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.master_logs = MasterLogBuffer()  # for det master logs
        app.state.master_logs.attach()
        db = Database(config.database_url, config.db_unavailable_wait.total_seconds())
        migrate(db.engine)
        cluster_id = await db.run(bootstrap)
        if blank := await db.run(users_without_password):
            log.warning(
                "users %s have no password: anyone who reaches this master may log in as them; "
                "set one with `det user change-password`",
                ", ".join(repr(name) for name in blank),
            )
        logs = LogStore(db)
        shipping = cloudwatch_logs.start(config, cluster_id, logs)
        scheduler = Scheduler(config, db, logs, utc_now)
        state = MasterState(
            config=config,
            db=db,
            logs=logs,
            scheduler=scheduler,
            cluster_id=cluster_id,
            master_id=str(uuid.uuid4()),
            started_at=utc_now(),
            join_token=config.join_token(),
        )
        app.state.master = state
        hub = proxy.ProxyHub(clock=utc_now)
        app.state.proxy = hub
        scheduler.exit_hooks.append(hub.task_ended)
        rendezvous = Rendezvous(scheduler.agent_slot_counts)
        app.state.rendezvous = rendezvous
        scheduler.exit_hooks.append(rendezvous.allocation_ended)
        engine = ExperimentEngine(state)
        engine.install()
        app.state.experiments = engine
        await scheduler.start()
        await engine.start()
        idle = IdleWatcher(state, hub)
        idle.start()
        provisioning = Provisioning(config, scheduler, db, cluster_id)
        state.provisioning = provisioning
        provisioning.start()
        spot_queue = None
        if config.spot_events is not None:
            from master.spot_queue import SpotQueue

            events = config.spot_events
            spot_queue = SpotQueue(scheduler, events.queue_url, events.region, events.endpoint_url)
            spot_queue.start()
        # What exists now (modules, the app, what a restart rebuilt) lives as long as the
        # master: frozen, it is left out of the collector's full passes. And those passes come
        # far less often than Python's default: under load they came every second or two and
        # held the event loop ~200 ms each time (a full pass walks every live object).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        log.info("master %s up at %s (cluster %s)", __version__, config.master_url, cluster_id)
        try:
            yield
        finally:
            await idle.stop()
            if spot_queue is not None:
                await spot_queue.stop()
            await provisioning.stop()
            await engine.stop()
            await scheduler.stop()
            await cloudwatch_logs.stop(shipping, logs)
            await hub.aclose()
            db.close()
            app.state.login_guard.close()
            app.state.master_logs.detach()

    app = FastAPI(
        title="Flotilla master",
        version=__version__,
        lifespan=lifespan,
        dependencies=[Depends(check_int_params)],
    )
    app.state.login_guard = LoginGuard(config.login)
    errors.install(app)
    # Outermost last: errors are caught around everything, bodies bounded before they are used.
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        json_limit=config.request_limits.max_body,
        context_limit=config.request_limits.max_context_body,
    )
    app.add_middleware(errors.UnexpectedErrorMiddleware)
    for module in (
        cluster,
        auth,
        users,
        agents,
        resource_pools,
        tasks,
        commands,
        workspaces,
        cost,
        allocations,
        preemption,
        experiments,
        trial_metrics_stream,
        trials,
        trial_reports,
        checkpoints,
        registry,
        registry_versions,
        checkpoint_download,
        metric_series,
        fleet,
        master_logs,
        debug,
        agent_link,
        proxy,
        proxy_ws,
    ):
        errors_listed = openapi.PUBLIC_ERRORS if module is cluster else openapi.API_ERRORS
        app.include_router(module.router, responses=errors_listed)
    for router in [*services.routers, *experiment_edit.routers, experiment_continue.router]:
        app.include_router(router, responses=openapi.API_ERRORS)
    # Last, so no console route can shadow an API one.
    app.include_router(console.router)
    openapi.without_validation_errors(app)
    return app
