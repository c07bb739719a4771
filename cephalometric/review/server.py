"""The review app's web server: a small Starlette app over a `ReviewStore`, served by uvicorn.

Job: HTTP only. The page (`static/review/`: plain HTML, JS and SVG, nothing fetched from the
internet) asks the JSON API below; every number it shows comes from the server, which computes it
with `measurements.compute_measurements` (one implementation, none in JavaScript).

    GET  /                       the page          GET  /static/<file>     its JS and CSS
    GET  /api/session            landmark names, S-N/N-A/N-B lines, norms, colours, the image list
    GET  /api/images             the image list (to review first, least confident first)
    GET  /api/image/<name>       one image's points, predictions, scores and measurements
    GET  /api/pixels/<name>      the image as PNG
    POST /api/measurements       {"image": name, "landmarks": [[x, y], ...]} -> measurements
    POST /api/save/<name>        {"landmarks": [[x, y], ...]} -> writes <out-dir>/<stem>.json

Safety: listens on 127.0.0.1 unless told otherwise; only names listed from the images folder are
served (see review_store); request bodies must be JSON (which also stops other web sites from
posting: browsers preflight that) and at most MAX_BODY_BYTES; on loopback the Host header must be
a loopback name (no DNS rebinding); every refusal is a JSON {"error": message}; the server stays
up.
Imports starlette and uvicorn, OpenCV, and the package's `drawing` (colours), `errors`,
`measurements` (names and norms) and `review_store`.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os.path as osp
import socket
import sys
import threading
import time
import traceback
from typing import Iterator

import cv2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cephalometric.drawing import landmark_color
from cephalometric.errors import UserError
from cephalometric.measurements import CLASS_NAMES, MEASUREMENTS
from cephalometric.review.store import RequestError, ReviewStore

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
        data = json.loads(bytes(body).decode('utf-8'), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as error:
        raise RequestError(400, f'the body is not valid JSON ({error})') from None
    if not isinstance(data, dict):
        raise RequestError(422, 'the body must be a JSON object')
    return data


def _reject_constant(name: str):
    raise ValueError(f'{name} is not a number')


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


def create_app(store: ReviewStore, host: str = '127.0.0.1') -> Starlette:
    """The Starlette app serving `store`; `host` is what the server listens on."""
    static = {}
    for name, media_type in STATIC_TYPES.items():
        with open(osp.join(STATIC_DIR, name), 'rb') as stream:
            static[name] = (stream.read(), media_type)

    def static_file(name: str) -> Response:
        content, media_type = static[name]
        return Response(content, media_type=media_type)

    async def index(request):
        return static_file('index.html')

    async def static_route(request):
        name = request.path_params['name']
        if name not in static:
            raise RequestError(404, f'no such file: {name}')
        return static_file(name)

    async def session(request):
        return JSONResponse({
            'landmarks': store.names, 'lines': store.lines,
            'score_threshold': store.score_threshold,
            'measurement_info': {key: info._asdict() for key, info in MEASUREMENTS.items()},
            'class_names': {str(k): v for k, v in CLASS_NAMES.items()},
            'colors': ['#%02x%02x%02x' % landmark_color(i) for i in range(len(store.names))],
            'images': store.listing()})

    async def images(request):
        return JSONResponse(store.listing())

    async def image(request):
        return JSONResponse(store.detail(request.path_params['name']))

    async def pixels(request):
        rgb = store.pixels(request.path_params['name'])
        ok, png = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RequestError(500, 'could not encode the image')
        return Response(png.tobytes(), media_type='image/png')

    async def measurements(request):
        data = await _json_body(request)
        coords = store.parse_points(data.get('image'), data.get('landmarks'))
        return JSONResponse({'measurements': store.measurements(coords)})

    async def save(request):
        name = request.path_params['name']
        store.case(name)   # refuse unknown names before reading the body
        data = await _json_body(request)
        coords = store.parse_points(name, data.get('landmarks'))
        record = store.save(name, coords)
        return JSONResponse({'saved': osp.basename(store.record_path(store.case(name).stem)),
                             'record': record, 'detail': store.detail(name),
                             'images': store.listing()})

    async def request_error(request, error: RequestError):
        return _error(error.status, str(error))

    async def http_error(request, error: HTTPException):
        message = {404: f'not found: {request.url.path}',
                   405: f'method {request.method} not allowed here'}.get(error.status_code,
                                                                        str(error.detail))
        return _error(error.status_code, message)

    async def server_error(request, error: Exception):
        traceback.print_exception(error)
        return _error(500, f'internal error ({type(error).__name__}); the server is still running')

    routes = [
        Route('/', index),
        Route('/static/{name:path}', static_route),
        Route('/api/session', session),
        Route('/api/images', images),
        Route('/api/image/{name:path}', image),
        Route('/api/pixels/{name:path}', pixels),
        Route('/api/measurements', measurements, methods=['POST']),
        Route('/api/save/{name:path}', save, methods=['POST']),
    ]
    middleware = [Middleware(_SecurityHeaders)]
    if is_loopback(host):
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES))
    return Starlette(routes=routes, middleware=middleware, exception_handlers={
        RequestError: request_error, HTTPException: http_error, Exception: server_error})


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
    app = create_app(store, host)
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
    server = make_server(create_app(store, host), sock)
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
