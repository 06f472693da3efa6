"""The viewer's web application: pages, their JSON, live records and run files.

Only GET: nothing here changes a run. Every query goes through a confined Store
(`runstore.confinement`), every file through `files.open_attachment`, and requests for
another host than the one served are refused (DNS rebinding). A damaged run gets a
message on its row and its page; it never makes the server answer 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runstore._version import __version__
from runstore.confinement import QueryLimits
from runstore.errors import QueryError, RunstoreError
from runstore.query import Store

from . import queries
from .archiving import Archiver
from .files import INLINE_TYPES, FileRefused, open_attachment, read_chunks
from .live import RESYNC, LiveHub
from .queries import BadRequest, RunsQuery
from .series import SeriesQuery, series
from .stores import StorePool

_HERE: Final = Path(__file__).parent
#: Loopback names a browser on this machine sends as Host.
LOCAL_HOSTS: Final = ("127.0.0.1", "localhost", "[::1]", "::1")
#: Rows the SQL page shows at most (the store's row cap bounds it too).
SQL_ROWS: Final = 1000
# Scripts and styles from this server only; images from it or data: URLs (uPlot's
# legend markers); nothing may connect elsewhere, frame the page or be framed.
_HEADERS: Final = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        b"connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
        b"form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_T = TypeVar("_T")


@dataclass(frozen=True)
class ViewerOptions:
    """How a viewer serves its root."""

    root: Path
    #: Threads that run queries, each with its own confined Store.
    workers: int = 2
    limits: QueryLimits = field(default_factory=QueryLimits)
    #: Host names a request may carry besides the loopback ones.
    allowed_hosts: tuple[str, ...] = ()
    sql_rows: int = SQL_ROWS
    #: Keep the root's archive up to date (`runstore compact`) in the background.
    archive: bool = True


class _SecurityHeaders:
    """Adds the policy headers to every response (pure ASGI: SSE streams untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name, value) for name, value in _HEADERS if name not in names
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _dumps(content)


def _error(status: int, message: str) -> _JSON:
    return _JSON({"error": message}, status_code=status)


# -- request parameters ----------------------------------------------------------------


def _int(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {text!r}") from None


def _float(request: Request, name: str) -> float | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name} must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, not {text!r}")
    return value


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "") in ("1", "true", "yes", "on")


def _category(request: Request) -> str | None:
    # The default category is null in SQL; the page sends it as an absent parameter.
    return request.query_params.get("category") or None


def create_app(options: ViewerOptions) -> Starlette:
    """The viewer over `options.root`, an ASGI app for uvicorn (or any ASGI server)."""
    root = options.root.resolve()
    archiver = Archiver(root) if options.archive else None
    pool = StorePool(
        root,
        workers=options.workers,
        limits=options.limits,
        on_pending=archiver.poke if archiver is not None else None,
    )
    hub = LiveHub(root)
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.globals.update(version=__version__, root=str(root))

    async def on_store(work: Callable[[Store], _T], *, fresh: bool = False) -> _T:
        return await pool.run(work, fresh=fresh)

    def page(name: str, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            request, name, {"page": name, "status": status, **context}, status_code=status
        )

    # -- pages ------------------------------------------------------------------------

    async def runs_page(request: Request) -> Response:
        return page("runs.html", request, title="Runs")

    async def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return page("run.html", request, title=run_id, run_id=run_id)

    async def compare_page(request: Request) -> Response:
        ids = request.query_params.getlist("run")
        return page("compare.html", request, title="Compare", run_ids=ids)

    async def sql_page(request: Request) -> Response:
        return page(
            "sql.html",
            request,
            title="SQL",
            query=request.query_params.get("q", ""),
            limits=options.limits,
            rows=options.sql_rows,
        )

    # -- JSON -------------------------------------------------------------------------

    async def api_runs(request: Request) -> Response:
        params = request.query_params
        ask = RunsQuery(
            text=params.get("q", ""),
            status=params.get("status", ""),
            sort=params.get("sort", "started"),
            descending=params.get("order", "desc") != "asc",
            offset=_int(request, "offset", 0),
            limit=_int(request, "limit", 50),
            metrics=tuple(key for key in params.getlist("metric") if key),
        )
        return _JSON(await on_store(lambda store: queries.runs_page(store, ask)))

    async def api_metric_keys(request: Request) -> Response:
        return _JSON({"keys": await on_store(queries.metric_keys)})

    async def api_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return _JSON(await on_store(lambda store: queries.run_detail(store, run_id), fresh=True))

    async def api_messages(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        levels = tuple(level for level in request.query_params.getlist("level") if level)
        dev = _flag(request, "dev")
        wanted = request.query_params.get("messages", "1") != "0"
        offset, limit = _int(request, "offset", 0), _int(request, "limit", 100)
        return _JSON(
            await on_store(
                lambda store: queries.messages_page(
                    store,
                    run_id,
                    levels=levels,
                    messages=wanted,
                    dev=dev,
                    offset=offset,
                    limit=limit,
                ),
                fresh=True,
            )
        )

    async def api_events(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        offset, limit = _int(request, "offset", 0), _int(request, "limit", 100)
        return _JSON(
            await on_store(
                lambda store: queries.events_page(store, run_id, offset=offset, limit=limit),
                fresh=True,
            )
        )

    async def api_series(request: Request) -> Response:
        params = request.query_params
        run, key = params.get("run"), params.get("key")
        if not run or not key:
            raise BadRequest("series needs run= and key=")
        ask = SeriesQuery(
            run=run,
            key=key,
            category=_category(request),
            x=params.get("x", "seq"),
            lo=_float(request, "lo"),
            hi=_float(request, "hi"),
            buckets=_int(request, "buckets", 1000),
        )
        return _JSON(await on_store(lambda store: series(store, ask), fresh=True))

    async def api_compare(request: Request) -> Response:
        ids = [run for run in request.query_params.getlist("run") if run]
        return _JSON(await on_store(lambda store: queries.compare(store, ids)))

    async def api_sql(request: Request) -> Response:
        text = request.query_params.get("q", "")
        rows = options.sql_rows
        return _JSON(await on_store(lambda store: queries.run_sql(store, text, rows)))

    async def api_status(request: Request) -> Response:
        archive: dict[str, Any] = {"enabled": archiver is not None}
        if archiver is not None:
            report = archiver.last
            archive.update(
                running=archiver.running,
                compactions=archiver.compactions,
                failure=archiver.failure,
                runs=report.archived if report is not None else None,
            )
        return _JSON(
            {
                "root": str(root),
                "version": __version__,
                "archive": archive,
                "live": {"failure": hub.failure},
            }
        )

    # -- files and live records ---------------------------------------------------------

    async def run_file(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        name = request.path_params["path"]

        def find(store: Store) -> str:
            rows = store.query(
                """SELECT r.dir FROM runs r JOIN events e ON e.run_id = r.run_id
                   WHERE r.run_id = $run AND e.attachment = $name LIMIT 1""",
                {"run": run_id, "name": name},
            ).table.to_pylist()
            if not rows:
                raise FileRefused(f"run {run_id!r} has no attachment {name!r}")
            return str(rows[0]["dir"])

        run_dir = await on_store(find)
        fd, size, media = await asyncio.to_thread(open_attachment, root, run_dir, name)
        headers = {
            "content-length": str(size),
            # A file of a run is data, never a page of this site: no script runs in it.
            "content-security-policy": "sandbox; default-src 'none'; img-src 'self'",
        }
        if media not in INLINE_TYPES:
            filename = Path(name).name.replace('"', "")
            headers["content-disposition"] = f'attachment; filename="{filename}"'
        return StreamingResponse(read_chunks(fd), media_type=media, headers=headers)

    async def live(request: Request) -> Response:
        run = request.query_params.get("dir") or None
        subscription = hub.subscribe(run)

        async def stream() -> AsyncIterator[Mapping[str, str]]:
            try:
                yield {"event": "ready", "data": "{}"}
                while True:
                    message = await subscription.queue.get()
                    if message == RESYNC:
                        yield {"event": "resync", "data": "{}"}
                    else:
                        yield {"event": "records", "data": message.decode()}
            finally:
                hub.unsubscribe(subscription)

        return EventSourceResponse(stream(), ping=15, send_timeout=30)

    # -- errors -------------------------------------------------------------------------

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    async def bad_request(request: Request, exc: Exception) -> Response:
        return _error(400, str(exc))

    async def cannot_read(request: Request, exc: Exception) -> Response:
        # The root itself went wrong (deleted, unreadable): say so, whatever the page.
        if wants_json(request):
            return _error(503, str(exc))
        return page(
            "error.html", request, title="Cannot read the runs", message=str(exc), status=503
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        message = str(exc.args[0]) if exc.args else "not found"
        if wants_json(request):
            return _error(404, message)
        return page("error.html", request, title="Not found", message=message, status=404)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if wants_json(request):
            return _error(exc.status_code, str(exc.detail))
        return page(
            "error.html",
            request,
            title=str(exc.detail),
            message=str(exc.detail),
            status=exc.status_code,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            hub.close()
            pool.close()
            if archiver is not None:
                archiver.close()

    allowed = [*LOCAL_HOSTS, *options.allowed_hosts]
    app = Starlette(
        routes=[
            Route("/", runs_page),
            Route("/runs/{run_id}", run_page),
            Route("/compare", compare_page),
            Route("/sql", sql_page),
            Route("/api/runs", api_runs),
            Route("/api/metric-keys", api_metric_keys),
            Route("/api/runs/{run_id}", api_run),
            Route("/api/runs/{run_id}/messages", api_messages),
            Route("/api/runs/{run_id}/events", api_events),
            Route("/api/series", api_series),
            Route("/api/compare", api_compare),
            Route("/api/sql", api_sql),
            Route("/api/live", live),
            Route("/api/status", api_status),
            Route("/files/{run_id}/{path:path}", run_file),
            Mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
        ],
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=allowed),
            Middleware(_SecurityHeaders),
        ],
        exception_handlers={
            BadRequest: bad_request,
            QueryError: bad_request,
            FileRefused: not_found,
            LookupError: not_found,
            RunstoreError: cannot_read,
            HTTPException: http_error,
        },
        lifespan=lifespan,
    )
    app.state.pool = pool
    app.state.hub = hub
    app.state.archiver = archiver
    return app
