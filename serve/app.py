"""The online scoring service: a Ray Serve application of two deployments.

``Ingress`` (FastAPI, a fraction of a CPU) authenticates, validates and decodes each request
and answers it; ``Scorer`` holds the model (``num_gpus`` only here), loaded once per replica
with :func:`apa.scoring.registry.load_scorer`, and scores dynamic batches (``@serve.batch``)
with :func:`apa.scoring.pipeline.score_batch`, the batch job's code path. The two scale
apart.

Routes (under the application's ``route_prefix``, ``/apa`` in the chart; Ray's HTTP proxy
owns ``/-/healthz`` and ``/-/routes`` at the root):

- ``POST /v1/assessments``: multipart (``audio`` file, ``text``, optional ``id``, ``levels``,
  ``scores``) or JSON (``{"text", "audio_base64", "id"?, "options"?: {"levels", "scores"}}``)
  → the :class:`~apa.schema.Assessment` JSON (the fields of the batch tables).
- ``GET /-/healthz``: 200 once a model replica answers (the model is loaded), else 503.
- ``GET /v1/models``: the base model, adapter, backend and whether the weights are random.
- ``GET /openapi.json``.

Limits, each answered by this code as problem JSON (:mod:`serve.errors`): a JSON body nested
deeper than ``max_json_depth`` or holding over ``max_json_items`` (400 ``request.too_deep``,
``request.too_complex``: measured before parsing), a body
not in within ``body_timeout_s`` (408 ``request.timeout``), and admission control
(:mod:`serve.admission`: 429 ``client.rate_limited``, 503 ``server.overloaded``, both with
``Retry-After``). Ray's own ingress limits sit far above, a last resort.

Serve config: ``import_path: serve.app:build_app`` with ``args`` holding
:class:`~serve.settings.ServeSettings` fields.
"""

import asyncio
import base64
import binascii
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from ray import serve
from ray.serve.config import BackpressureConfig
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from apa.lexicon import Lexicon
from apa.log import configure_logging, get_logger
from apa.models.errors import ModelLoadError
from apa.schema import Assessment, ErrorRecord, Level
from apa.scorer import PreparedUtterance, ScoreResult
from apa.scoring.pipeline import concurrency_guard, score_batch
from apa.scoring.registry import load_scorer
from apa.scoring.request import LEVELS, assessment_view, prepare_request
from serve.admission import Admission, client_identity
from serve.auth import KeyChecker
from serve.errors import PROBLEM_JSON, Problem
from serve.json_depth import json_shape
from serve.metrics import IngressMetrics, ScorerMetrics
from serve.settings import ServeSettings

log = get_logger(__name__)

LOAD_FAILURE_TTL_S = 5.0
"""how long the Ingress reuses one look at Serve's status for a model load failure (a look
asks the Serve controller; while no model replica answers, every request would)"""

RequestId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S+$")]


def _encodable(text: str) -> str:
    """JSON may carry a lone surrogate (``"\\ud800"``), which is no text: refuse it here as
    the client's mistake, before code further on chokes on it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode text ({e.reason} at {e.start})") from e
    return text


ReferenceText = Annotated[str, AfterValidator(_encodable)]


class AssessmentOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    levels: list[Level] = Field(
        default_factory=lambda: list(LEVELS),
        min_length=1,
        description="levels to report; sentence scores are always there, 'phone' needs 'word'",
    )
    scores: Literal["continuous", "integer"] = Field(
        default="continuous", description="'integer' rounds every score half up"
    )

    @field_validator("levels")
    @classmethod
    def _phone_needs_word(cls, levels: list[Level]) -> list[Level]:
        if "phone" in levels and "word" not in levels:
            raise ValueError("phone scores are reported inside their words: ask for 'word' too")
        return levels


class AssessmentRequest(BaseModel):
    """The JSON form of a request (``application/json``)."""

    model_config = ConfigDict(extra="forbid")

    text: ReferenceText = Field(description="the reference text the speaker read")
    audio_base64: str = Field(description="the encoded audio file (WAV, FLAC, OGG, MP3), base64")
    id: RequestId | None = Field(default=None, description="echoed as utterance_id")
    options: AssessmentOptions = Field(default_factory=AssessmentOptions)


_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["audio", "text"],
    "properties": {
        "audio": {"type": "string", "format": "binary"},
        "text": {"type": "string"},
        "id": {"type": "string"},
        "levels": {"type": "string", "description": "comma-separated: sentence,word,phone"},
        "scores": {"type": "string", "enum": ["continuous", "integer"]},
    },
}

app = FastAPI(
    title="apa online scoring",
    description="Pronunciation assessment of one utterance (Speechocean762 rubric). Errors are "
    "RFC 9457 problem JSON with a 'reason' (stage.code).",
    version="1",
)


_fastapi_openapi = app.openapi


def _openapi() -> dict[str, Any]:
    """FastAPI's document, plus the JSON request schema that the raw-body route names."""
    if app.openapi_schema is None:
        schema = _fastapi_openapi()
        request = AssessmentRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(request.pop("$defs", {}))
        components["AssessmentRequest"] = request
        app.openapi_schema = schema
    return app.openapi_schema


app.openapi = _openapi  # type: ignore[method-assign]


@app.exception_handler(Problem)
async def _problem(_: Request, exc: Problem) -> Response:
    return exc.response()


@app.exception_handler(RequestValidationError)
async def _invalid(_: Request, exc: RequestValidationError) -> Response:
    return _validation_problem(exc.errors()).response()


@app.exception_handler(StarletteHTTPException)
async def _http(_: Request, exc: StarletteHTTPException) -> Response:
    reason = {404: "request.not_found", 405: "request.method_not_allowed"}.get(
        exc.status_code, "request.malformed"
    )
    return Problem(reason, str(exc.detail), status=exc.status_code).response()


def _validation_problem(errors: Any) -> Problem:
    listed = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in errors
    ]
    detail = "; ".join(f"{'.'.join(e['loc']) or 'body'}: {e['msg']}" for e in listed)
    return Problem("request.invalid", detail or "invalid request", extra={"errors": listed})


# Defined before the deployments: ``@serve.ingress`` serializes the FastAPI app (and the
# globals its routes use) when the class is decorated.


class _Parsed(BaseModel):
    """A request, JSON or multipart, parsed: the audio still encoded."""

    text: ReferenceText
    audio: bytes
    id: RequestId | None = None
    options: AssessmentOptions


def _parse_json(body: bytes, max_depth: int, max_items: int) -> _Parsed:
    """Parse and validate a JSON body. Its shape is bounded first: ``json`` and pydantic
    recurse once per level (a ``RecursionError`` past ~1000), and every item becomes a
    Python object (16 MiB of ``[],`` would take ~400 MB)."""
    shape = json_shape(body, max_depth=max_depth, max_items=max_items)
    if shape.depth > max_depth:
        raise _too_deep(max_depth)
    if shape.items > max_items:
        raise Problem(
            "request.too_complex",
            f"the JSON body holds more than {max_items} items (arrays, objects, members)",
        )
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise Problem("request.malformed", f"the body is not valid JSON: {e}") from e
    except RecursionError as e:  # unreachable past the depth check; kept as a backstop
        raise _too_deep(max_depth) from e
    try:
        request = AssessmentRequest.model_validate(data)
    except ValidationError as e:
        raise _validation_problem(e.errors()) from e
    except RecursionError as e:
        raise _too_deep(max_depth) from e
    return _Parsed(
        text=request.text,
        audio=_decode_base64(request.audio_base64),
        id=request.id,
        options=request.options,
    )


def _too_deep(max_depth: int) -> Problem:
    return Problem(
        "request.too_deep", f"the JSON body nests deeper than {max_depth} arrays or objects"
    )


def _decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise Problem("request.bad_base64", f"audio_base64 is not valid base64: {e}") from e


async def _parse_multipart(request: Request, body: bytes) -> _Parsed:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise Problem("request.malformed", f"the multipart body cannot be parsed: {e}") from e
    try:
        audio = form.get("audio")
        if not isinstance(audio, UploadFile):
            raise Problem("request.invalid", "the multipart body needs an 'audio' file part")
        fields: dict[str, Any] = {}
        for name in ("text", "id", "levels", "scores"):
            value = form.get(name)
            if isinstance(value, UploadFile):
                raise Problem("request.invalid", f"'{name}' must be a form field, not a file")
            if value is not None:
                fields[name] = value
        if "text" not in fields:
            raise Problem("request.invalid", "the multipart body needs a 'text' field")
        options: dict[str, Any] = {}
        if "levels" in fields:
            options["levels"] = [v.strip() for v in fields["levels"].split(",") if v.strip()]
        if "scores" in fields:
            options["scores"] = fields["scores"]
        try:
            return _Parsed(
                text=fields["text"],
                audio=await audio.read(),
                id=fields.get("id"),
                options=AssessmentOptions.model_validate(options),
            )
        except ValidationError as e:
            raise _validation_problem(e.errors()) from e
    finally:
        await form.close()


def model_load_failure(app_name: str) -> ModelLoadError | None:
    """The :class:`ModelLoadError` a deployment of this Serve application reports in its
    status message (its replicas fail to start: :class:`Scorer` writes the error there), if
    one does."""
    app_status = serve.status().applications.get(app_name)
    for deployment in app_status.deployments.values() if app_status else ():
        if (error := ModelLoadError.in_text(deployment.message)) is not None:
            return error
    return None


@serve.deployment
class Scorer:
    """The model deployment: one scorer per replica, dynamic batches through ``score``."""

    def __init__(self, args: dict[str, Any]) -> None:
        configure_logging()
        self.settings = ServeSettings(**args)
        started = time.perf_counter()
        try:
            self.scorer = load_scorer(self.settings.scoring)
        except ModelLoadError as e:
            log.error("model_load_failed", reason=e.reason, message=e.message)
            # Serve keeps a failed replica start as its traceback's text (the deployment's
            # status message): one line that the Ingress and serve.local read back
            raise RuntimeError(e.as_text()) from e
        self.guard = concurrency_guard(self.scorer)
        self.metrics = ScorerMetrics()
        self.score.set_max_batch_size(self.settings.scoring.batch_size)
        self.score.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)
        log.info(
            "scorer_loaded",
            model=self.scorer.info.name,
            backend=self.scorer.info.backend,
            model_is_random=self.scorer.info.model_is_random,
            seconds=round(time.perf_counter() - started, 3),
            max_batch_size=self.settings.scoring.batch_size,
        )

    def _score(self, items: list[PreparedUtterance]) -> list[ScoreResult]:
        with self.guard:
            return score_batch(self.scorer, items)

    def info(self) -> dict[str, Any]:
        scoring = self.settings.scoring
        return {
            **self.scorer.info.model_dump(),
            "mode": getattr(self.scorer, "mode", None),  # resolved (an adapter's own); LMMs only
            "scores": scoring.scores,
            "max_batch_size": scoring.batch_size,
        }

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01, max_concurrent_batches=2)
    async def score(self, items: list[PreparedUtterance]) -> list[ScoreResult]:
        # In a thread, so that requests keep queueing into the next batch meanwhile. Two
        # batches at once: the LMM engine's device stage takes one at a time, so one batch is
        # encoded or decoded on the host while the other is on the device.
        results = await asyncio.to_thread(self._score, items)
        self.metrics.batch(len(items), sum(item.audio.duration_s for item in items))
        return results


@serve.deployment
@serve.ingress(app)
class Ingress:
    """HTTP: authentication, limits, validation, decoding; scoring is the ``Scorer``'s."""

    def __init__(self, scorer: DeploymentHandle, args: dict[str, Any]) -> None:
        configure_logging()
        self.settings = ServeSettings(**args)
        self.auth = KeyChecker(self.settings.auth_keys())
        lexicon = Lexicon.cmudict()
        if self.settings.lexicon:
            lexicon = Lexicon.from_file(self.settings.lexicon).with_fallback(lexicon)
        lexicon.lookup("warm")  # load CMUdict now, not on the first request
        self.lexicon = lexicon
        self.scorer = scorer
        self.metrics = IngressMetrics()
        self._retry = {"Retry-After": str(self.settings.retry_after_s)}
        self._load_failure: tuple[float, ModelLoadError | None] = (-math.inf, None)
        """when Serve's status was last read for a model load failure, and what it said"""
        self._load_failure_lock = asyncio.Lock()
        self.admission = Admission(
            max_in_flight=self.settings.max_in_flight_requests,
            max_per_client=self.settings.max_in_flight_per_client,
            max_slow_uploads=self.settings.max_slow_uploads,
            retry_after_s=self.settings.retry_after_s,
        )
        log.info("ingress_ready", auth=self.auth.enabled)

    async def _answer(
        self, route: str, request: Request, handler: Callable[[], Awaitable[Response]]
    ) -> Response:
        """Run ``handler``; a :class:`Problem` becomes its answer, and so does any other
        exception (a 500 ``server.error``: problem JSON too, never Ray's text/plain page);
        count and log either way."""
        started = time.perf_counter()
        reason = None
        try:
            response = await handler()
        except Problem as problem:
            response, reason = problem.response(), problem.reason
        except Exception:
            log.exception("request_failed", route=route)
            problem = Problem("server.error", "the request failed on the server", status=500)
            response, reason = problem.response(), problem.reason
        seconds = time.perf_counter() - started
        self.metrics.answered(route, response.status_code, seconds)
        log.info(
            "request",
            route=route,
            status=response.status_code,
            reason=reason,
            seconds=round(seconds, 4),
            client=request.client.host if request.client else None,
        )
        return response

    async def _model_info(self) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(
                self.scorer.info.remote(), timeout=self.settings.health_timeout_s
            )
        except (TimeoutError, BackPressureError, DeploymentUnavailableError) as e:
            await self._raise_if_model_load_failed()
            raise Problem(
                "server.not_ready",
                f"no model replica answered within {self.settings.health_timeout_s:g} s "
                f"({type(e).__name__})",
                headers=self._retry,
            ) from e

    async def _raise_if_model_load_failed(self) -> None:
        """When no model replica answers: a 503 ``server.model_load_failed`` with the
        reason if the Scorer's replicas fail to start because the model cannot be loaded
        (read from Serve's status of this application; no ``Retry-After``, as retrying does
        not mend it), else nothing (not ready yet, or overloaded)."""
        async with self._load_failure_lock:  # one look at a time, then shared a while
            checked, error = self._load_failure
            if time.monotonic() - checked >= LOAD_FAILURE_TTL_S:
                app_name = serve.get_replica_context().app_name
                try:
                    error = await asyncio.to_thread(model_load_failure, app_name)
                except Exception:  # the controller out of reach: say not ready, as before
                    log.warning("serve_status_failed", exc_info=True)
                    error = None
                self._load_failure = (time.monotonic(), error)
        if error is not None:
            raise Problem(
                "server.model_load_failed",
                f"the model cannot be loaded ({error.reason}): {error.message}",
                extra={"model_reason": error.reason},
            )

    @app.get("/-/healthz", summary="ready once a model replica has its model loaded")
    async def healthz(self, request: Request) -> Response:
        async def handle() -> Response:
            info = await self._model_info()
            return JSONResponse({"status": "ok", "model": info["name"]})

        return await self._answer("/-/healthz", request, handle)

    @app.get("/v1/models", summary="the model that scores: base, adapter, random weights")
    async def models(self, request: Request) -> Response:
        async def handle() -> Response:
            self._authenticate(request)
            return JSONResponse({"models": [await self._model_info()]})

        return await self._answer("/v1/models", request, handle)

    @app.post(
        "/v1/assessments",
        summary="assess one utterance",
        response_model=Assessment,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/AssessmentRequest"}
                    },
                    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
                },
            },
            "responses": {
                str(code): {"description": text, "content": {PROBLEM_JSON: {}}}
                for code, text in (
                    (
                        400,
                        "malformed body, or JSON nested too deep (request.too_deep) or "
                        "holding too many items (request.too_complex)",
                    ),
                    (401, "no or wrong API key"),
                    (408, "the body did not arrive within body_timeout_s (request.timeout)"),
                    (413, "upload or audio over the size limit"),
                    (415, "not JSON or multipart"),
                    (422, "bad audio, text or options (see 'reason')"),
                    (
                        429,
                        "this client has too many assessments in flight "
                        "(client.rate_limited): retry after Retry-After seconds",
                    ),
                    (
                        503,
                        "overloaded (server.overloaded) or not ready (server.not_ready): "
                        "retry after Retry-After seconds; or the model cannot be loaded "
                        "(server.model_load_failed)",
                    ),
                )
            },
        },
    )
    async def assess(self, request: Request) -> Response:
        return await self._answer("/v1/assessments", request, lambda: self._assess(request))

    def _authenticate(self, request: Request) -> None:
        problem = self.auth(request.headers.get("authorization"))
        if problem is not None:
            raise problem

    async def _assess(self, request: Request) -> Response:
        self._authenticate(request)
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in ("application/json", "multipart/form-data"):
            raise Problem(
                "request.unsupported_media_type",
                f"send application/json or multipart/form-data, not {media or 'no content type'}",
            )
        client = client_identity(
            request.headers.get("authorization"),
            request.client.host if request.client else None,
            keyed=self.auth.enabled,
        )
        with self.admission.admit(client):
            return await self._admitted(request, media)

    async def _admitted(self, request: Request, media: str) -> Response:
        """An admitted assessment: read, parse, decode, score."""
        body = await self._read_body(request)
        if media == "application/json":
            # In a thread: parsing a 16 MiB body would hold up every other request.
            parsed = await run_in_threadpool(
                _parse_json, body, self.settings.max_json_depth, self.settings.max_json_items
            )
        else:
            parsed = await _parse_multipart(request, body)
        request_id = parsed.id or uuid.uuid4().hex
        prepared = await run_in_threadpool(
            prepare_request,
            request_id,
            parsed.text,
            parsed.audio,
            lexicon=self.lexicon,
            audio_config=self.settings.audio,
            max_text_chars=self.settings.scoring.max_text_chars,
        )
        if isinstance(prepared, ErrorRecord):
            raise Problem(prepared.reason, prepared.message)
        self.metrics.audio.observe(prepared.audio.duration_s)
        try:
            result = await self.scorer.score.remote(prepared)
        except BackPressureError as e:
            raise Problem(
                "server.overloaded", "too many requests in flight; retry", headers=self._retry
            ) from e
        except DeploymentUnavailableError as e:
            await self._raise_if_model_load_failed()
            raise Problem(
                "server.not_ready", "no model replica is available", headers=self._retry
            ) from e
        if isinstance(result, ErrorRecord):
            raise Problem(result.reason, result.message)
        view = assessment_view(
            result, levels=parsed.options.levels, integer=parsed.options.scores == "integer"
        )
        return JSONResponse(view.model_dump(mode="json"))

    async def _read_body(self, request: Request) -> bytes:
        """The whole body, within ``body_timeout_s``; a body still arriving after
        ``slow_upload_s`` needs a slow-upload place (503 when none is free). Past either the
        reading stops and the connection is closed, the rest of the body unread."""
        settings = self.settings
        reading = asyncio.ensure_future(self._receive_body(request))
        try:
            done, _ = await asyncio.wait({reading}, timeout=settings.slow_upload_s)
            if not done:
                with self.admission.slow_upload():
                    left = settings.body_timeout_s - settings.slow_upload_s
                    done, _ = await asyncio.wait({reading}, timeout=left)
            if not done:
                raise Problem(
                    "request.timeout",
                    f"the request body did not arrive within {settings.body_timeout_s:g} s",
                )
            return reading.result()
        except Problem as problem:
            # The rest of the body stays unread: the connection cannot carry another request.
            problem.headers = {**problem.headers, "Connection": "close"}
            raise
        finally:
            reading.cancel()  # a no-op once done

    async def _receive_body(self, request: Request) -> bytes:
        limit = self.settings.max_upload_bytes
        too_large = Problem(
            "request.too_large", f"the request body is over the {limit:,}-byte limit"
        )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """The Serve application builder (``import_path: serve.app:build_app``): the settings are
    checked here, so a bad config fails at deploy time with pydantic's message, and each
    replica builds its own from the same ``args`` and its environment (API keys are read in
    the replica, never passed through the controller)."""
    args = dict(args or {})
    settings = ServeSettings(**args)
    settings.auth_keys()
    scorer = Scorer.options(
        num_replicas=settings.scorer_replicas,
        ray_actor_options={
            "num_cpus": settings.scorer_num_cpus,
            "num_gpus": settings.scorer_num_gpus,
        },
        max_ongoing_requests=settings.scorer_max_ongoing_requests,
        max_queued_requests=settings.scorer_max_queued_requests,
    ).bind(args)
    return Ingress.options(
        num_replicas=settings.ingress_replicas,
        ray_actor_options={"num_cpus": settings.ingress_num_cpus},
        max_ongoing_requests=settings.ingress_max_ongoing_requests,
        max_queued_requests=settings.ingress_max_queued_requests,
        backpressure_config=BackpressureConfig(
            status_code=503, retry_after_s=settings.retry_after_s
        ),
    ).bind(scorer, args)
