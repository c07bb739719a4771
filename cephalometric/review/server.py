"""The review app's web server: a small Starlette app over a `ReviewStore`, served by uvicorn.

Job: HTTP only. The page (`static/`: plain HTML, JS and SVG, nothing fetched from the internet)
asks the JSON API below; every number it shows comes from the server, which computes it with
`measurements.compute_measurements` (one implementation, none in JavaScript).

    GET  /                       the page          GET  /static/<file>     its JS and CSS
    GET  /api/session            landmark names, help, lines, norms, colours, progress, the list
    GET  /api/images             {"images": the list, "progress": {"done", "total", "failure"}}
    GET  /api/image/<name>       one image's points, predictions, scores, measurements, marks and
                                 certainty (90% intervals, class probabilities)
    GET  /api/pixels/<name>      the image (?max=N: scaled down to fit N px, as JPEG) for display
    POST /api/measurements       {"image", "landmarks": [[x, y] | null, ...], "calibration"}
    POST /api/save/<name>        {"landmarks", "status", "reason", "reviewer", "calibration"}
    GET  /api/report/<name>      the one-page report of the saved review (?format=pdf|png)

Safety: listens on 127.0.0.1 unless told otherwise; only names listed from the images folder are
served (see review_store); request bodies must be JSON and at most MAX_BODY_BYTES, read with
bounded integers and nesting (`store.parse_json`); a request whose Origin or Referer is not this
server's own address is refused (no other web site can post, even without a preflight); on
loopback the Host header must be a loopback name (no DNS rebinding); every refusal is a JSON
{"error": message}; the server stays up.
Imports starlette and uvicorn, OpenCV, and the package's `errors`, `measurements` (names and
norms) and `review.clinical`, `review.report`, `review.store`.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os.path as osp
import socket
import sys
import threading
import time
import traceback
from typing import Iterator

import cv2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cephalometric.errors import UserError
from cephalometric.measurements import CLASS_NAMES, MEASUREMENTS
from cephalometric.review.clinical import CLINICAL_NAMES
from cephalometric.review.store import RequestError, ReviewStore, marks, parse_json

STATIC_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'static')
STATIC_TYPES = {'index.html': 'text/html; charset=utf-8',
                'review.js': 'text/javascript; charset=utf-8',
                'review.css': 'text/css; charset=utf-8'}
MAX_BODY_BYTES = 64 * 1024   # 19 landmarks as JSON are about 1 KB
LOOPBACK_NAMES = ['127.0.0.1', 'localhost', '::1', '[::1]']
SECURITY_HEADERS = [
    (b'content-security-policy', b"default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                 b"frame-ancestors 'none'; base-uri 'none'"),
    (b'x-content-type-options', b'nosniff'),
    (b'referrer-policy', b'no-referrer'),
    (b'cache-control', b'no-store'),
]


def is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        return False


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({'error': message}, status_code=status)


async def _json_body(request: Request):
    """The request's JSON body; RequestError for a wrong type, an oversized or a malformed body."""
    if request.headers.get('content-type', '').split(';')[0].strip().lower() != 'application/json':
        raise RequestError(415, 'send the body as JSON with Content-Type: application/json')
    length = request.headers.get('content-length')
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise RequestError(413, f'request body too large: at most {MAX_BODY_BYTES} bytes')
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(413, f'request body too large: at most {MAX_BODY_BYTES} bytes')
    try:
        data = parse_json(bytes(body).decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as error:
        raise RequestError(400, f'the body is not valid JSON ({error})') from None
    if not isinstance(data, dict):
        raise RequestError(422, 'the body must be a JSON object')
    return data


# Landmark colours of the page: Okabe & Ito's palette for colour-vision deficiencies, without its
# yellow (kept for the review ring, which is also dashed) and black; numbers tell points apart.
PAGE_COLORS = ('#e69f00', '#56b4e9', '#009e73', '#0072b2', '#d55e00', '#cc79a7', '#ffffff')
MAX_PIXELS_CACHE = 6               # photos kept encoded for display
MAX_CACHED_BYTES = 8 * 1024 * 1024


def _host_and_port(value: str):
    """(host, port) of an 'http://host:port' origin or URL, or None when it is not http."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != 'http' or not parts.hostname:
        return None
    return parts.hostname.lower(), port or 80


class _Guard:
    """Refuses, with the API's JSON error, a Host header that is not this server's name and an
    Origin or Referer that is not this server's own address."""

    def __init__(self, app, hosts: list, port_of):
        self.app = app
        self.hosts = {h.strip('[]').lower() for h in hosts}
        self.port_of = port_of

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        headers = {k.decode('latin-1').lower(): v.decode('latin-1')
                   for k, v in scope.get('headers', [])}
        problem = self.problem(headers)
        if problem:
            return await _error(*problem)(scope, receive, send)
        return await self.app(scope, receive, send)

    def problem(self, headers: dict):
        host = headers.get('host', '')
        own = _host_and_port(f'http://{host}') if host else None
        if self.hosts and (own is None or own[0].strip('[]') not in self.hosts):
            return 400, (f'refused: the Host header {host!r} is not this server\'s name; open the '
                         'address the server printed')
        if headers.get('sec-fetch-site') == 'cross-site':
            return 403, ('refused: a request from another web site (Sec-Fetch-Site cross-site); '
                         'use the review page itself')
        port = self.port_of()
        for header in ('origin', 'referer'):
            value = headers.get(header)
            if value is None:
                continue
            site = _host_and_port(value)
            same = own is not None and site is not None and \
                site[0].strip('[]') == own[0].strip('[]') and site[1] == own[1] and \
                (port is None or site[1] == port)
            if not same:
                return 403, (f'refused: a request from another web site ({header} '
                             f'{value[:80]!r}); use the review page itself')
        return None


class _SecurityHeaders:
    """Adds SECURITY_HEADERS to every response (plain ASGI: no per-request overhead to speak of)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message['type'] == 'http.response.start':
                message.setdefault('headers', [])
                message['headers'] = list(message['headers']) + SECURITY_HEADERS
            await send(message)

        return await self.app(scope, receive, send_with_headers)


class _Pages:
    """The page itself: index.html and its static files, read once."""

    def __init__(self):
        self.files = {}
        for name, media_type in STATIC_TYPES.items():
            with open(osp.join(STATIC_DIR, name), 'rb') as stream:
                self.files[name] = (stream.read(), media_type)

    def file(self, name: str) -> Response:
        content, media_type = self.files[name]
        return Response(content, media_type=media_type)

    async def index(self, request):
        return self.file('index.html')

    async def static(self, request):
        name = request.path_params['name']
        if name not in self.files:
            raise RequestError(404, f'no such file: {name}')
        return self.file(name)


class _Api:
    """The JSON API over a ReviewStore, and the photos scaled for display."""

    def __init__(self, store: ReviewStore):
        self.store = store
        self.encoded: dict = {}   # (name, max side, mtime) -> (bytes, media type): recent photos

    async def session(self, request):
        data = self.store.session()
        data.update({
            'measurement_info': {key: dict(info._asdict(), name=CLINICAL_NAMES.get(key, key))
                                 for key, info in MEASUREMENTS.items()},
            'class_names': {str(k): v for k, v in CLASS_NAMES.items()},
            'colors': [PAGE_COLORS[i % len(PAGE_COLORS)] for i in range(len(self.store.names))],
            'images': self.store.listing()})
        return JSONResponse(data)

    async def images(self, request):
        return JSONResponse({'images': self.store.listing(), 'progress': self.store.progress()})

    async def image(self, request):
        return JSONResponse(self.store.detail(request.path_params['name']))

    def encode(self, name: str, limit: int):
        """The photo as PNG, or as JPEG scaled so its longer side is `limit` (0: full size)."""
        rgb = self.store.pixels(name)
        height, width = rgb.shape[:2]
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if limit and max(width, height) > limit:
            scale = limit / max(width, height)
            bgr = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
                             interpolation=cv2.INTER_AREA)
            ok, data = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
            media_type = 'image/jpeg'
        else:
            ok, data = cv2.imencode('.png', bgr)
            media_type = 'image/png'
        if not ok:
            raise RequestError(500, 'could not encode the image')
        return data.tobytes(), media_type

    async def pixels(self, request):
        name = request.path_params['name']
        text = request.query_params.get('max', '0')
        if not text.isdigit() or len(text) > 6:
            raise RequestError(422, '?max= must be a whole number of pixels')
        limit = int(text)
        limit = 0 if limit == 0 else min(max(limit, 64), 20000)
        path = self.store.image_file(name)     # checked on every request (links swapped in)
        key = (name, limit, osp.getmtime(path))
        if key in self.encoded:
            content, media_type = self.encoded[key]
        else:
            content, media_type = await run_in_threadpool(self.encode, name, limit)
            if len(content) <= MAX_CACHED_BYTES:      # a full-size camera photo is not kept
                if len(self.encoded) >= MAX_PIXELS_CACHE:
                    self.encoded.pop(next(iter(self.encoded)))
                self.encoded[key] = content, media_type
        return Response(content, media_type=media_type)

    async def measurements(self, request):
        store = self.store
        data = await _json_body(request)
        name = data.get('image')
        coords = store.parse_points(name, data.get('landmarks'))
        calibration = store.parse_calibration(name, data.get('calibration'))
        values = store.measurements(coords, calibration)
        return JSONResponse({'measurements': values, 'marks': marks(values),
                             'certainty': store.certainty(store.case(name), coords, calibration),
                             'points': [None if p[0] != p[0] else p for p in coords.tolist()],
                             'mm_per_pixel': store.spacing(calibration)})

    async def save(self, request):
        store = self.store
        name = request.path_params['name']
        store.case(name)   # refuse unknown names before reading the body
        data = await _json_body(request)
        status = data.get('status', 'reviewed')
        # A case that cannot be traced may keep the points it has.
        coords = None if status == 'cannot trace' and data.get('landmarks') is None else \
            store.parse_points(name, data.get('landmarks'))
        calibration = store.parse_calibration(name, data.get('calibration'))
        record = store.save(name, coords, status=status,
                            reason=data.get('reason'), reviewer=data.get('reviewer'),
                            calibration=calibration)
        return JSONResponse({'saved': osp.basename(store.record_path(store.case(name).stem)),
                             'record': record, 'detail': store.detail(name),
                             'images': store.listing()})

    async def report(self, request):
        from cephalometric.review.report import render_report
        name = request.path_params['name']
        case = self.store.case(name)
        kind = request.query_params.get('format', 'pdf')
        if kind not in ('pdf', 'png'):
            raise RequestError(422, '?format= must be pdf or png')
        path = self.store.record_path(case.stem)
        if not case.reviewed or not osp.isfile(path):
            raise RequestError(409, f'{name} has no saved review yet; save it first')
        content = await run_in_threadpool(render_report, path, self.store.image_file(name), kind)
        return Response(content, media_type='application/pdf' if kind == 'pdf' else 'image/png',
                        headers={'content-disposition':
                                 f'attachment; filename="{case.stem}_report.{kind}"'})


async def _request_error(request, error: RequestError):
    return _error(error.status, str(error))


async def _http_error(request, error: HTTPException):
    message = {404: f'not found: {request.url.path}',
               405: f'method {request.method} not allowed here'}.get(error.status_code,
                                                                    str(error.detail))
    return _error(error.status_code, message)


async def _server_error(request, error: Exception):
    if isinstance(error, UserError):
        return _error(422, str(error))
    traceback.print_exception(error)
    return _error(500, f'internal error ({type(error).__name__}); the server is still running')


def create_app(store: ReviewStore, host: str = '127.0.0.1', port=None) -> Starlette:
    """The Starlette app serving `store`; `host` (and `port`, an int or a callable giving it) is
    what the server listens on."""
    pages, api = _Pages(), _Api(store)
    routes = [
        Route('/', pages.index),
        Route('/static/{name:path}', pages.static),
        Route('/api/session', api.session),
        Route('/api/images', api.images),
        Route('/api/image/{name:path}', api.image),
        Route('/api/pixels/{name:path}', api.pixels),
        Route('/api/measurements', api.measurements, methods=['POST']),
        Route('/api/save/{name:path}', api.save, methods=['POST']),
        Route('/api/report/{name:path}', api.report),
    ]
    hosts = LOOPBACK_NAMES if is_loopback(host) else ([] if host in ('0.0.0.0', '::', '') else
                                                      [host])
    port_of = port if callable(port) else (lambda: port)
    middleware = [Middleware(_SecurityHeaders), Middleware(_Guard, hosts=hosts, port_of=port_of)]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={
        RequestError: _request_error, HTTPException: _http_error, Exception: _server_error})


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port); UserError if that is impossible."""
    if not 0 <= port <= 65535:
        raise UserError(f'--port must be between 0 and 65535, got {port}')
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UserError(f'--host {host} is not an address of this machine ({error.strerror}); '
                        'use 127.0.0.1') from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise UserError(f'cannot listen on {host}:{port} ({error.strerror}); choose another '
                        '--port or --host') from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f'http://[{host}]:{port}/' if ':' in host else f'http://{host}:{port}/'


def make_server(app, sock: socket.socket):
    """A uvicorn Server for `app`; run it with `server.run(sockets=[sock])`."""
    import uvicorn
    config = uvicorn.Config(app, log_level='warning', access_log=False, lifespan='off',
                            server_header=False)
    return uvicorn.Server(config)


def serve(store: ReviewStore, host: str, port: int) -> None:
    """Listen on host:port, print the address, and serve until Ctrl+C."""
    sock = bind(host, port)
    app = create_app(store, host, sock.getsockname()[1])
    warning = host_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f'Review app: open {address(sock)} in a browser (Ctrl+C to stop)', flush=True)
    make_server(app, sock).run(sockets=[sock])


def host_warning(host: str) -> str:
    """The warning printed when the app listens beyond this machine ('' on loopback)."""
    if is_loopback(host):
        return ''
    return (f'warning: listening on {host}: anyone who can reach this machine can see the photos '
            'and change the reviews; the review app has no login. Keep the default 127.0.0.1 '
            'unless the network is private.')


@contextlib.contextmanager
def running_server(store: ReviewStore, host: str = '127.0.0.1', port: int = 0) -> Iterator[str]:
    """Serve `store` from a background thread (tests, screenshots); yields the address."""
    sock = bind(host, port)
    server = make_server(create_app(store, host, sock.getsockname()[1]), sock)
    thread = threading.Thread(target=server.run, kwargs={'sockets': [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError('the review server did not start')
            time.sleep(0.01)
        yield address(sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
