"""The system page: models, indexes, thresholds and the service's metrics in human form."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from services.admin.render import human_metrics, system_models, thresholds_table
from services.admin.routes.deps import AdminDep, render, screen
from services.deps import SettingsDep, StoreDep

router = screen()


@router.get("/system")
def system_page(
    request: Request, admin: AdminDep, store: StoreDep, settings: SettingsDep
) -> HTMLResponse:
    metrics = getattr(request.app.state, "metrics", None)
    registry = getattr(metrics, "registry", None)
    indexes = [i for i in store.describe_indexes() if admin.may_see(i["collection"])]
    return render(
        request,
        "system.html",
        admin,
        models=system_models(settings),
        indexes=indexes,
        index_factory=settings.index_factory,
        thresholds=thresholds_table(store.model_name, settings, store.detector_name),
        default_far=settings.default_far,
        metrics=human_metrics(registry) if registry is not None else None,
    )
