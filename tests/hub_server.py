"""A stand-in for the Hugging Face Hub endpoints an upload uses, on 127.0.0.1, for tests without network.

It speaks the wire protocol huggingface_hub speaks (huggingface_hub itself is not mocked), keeps what arrives, and
checks it like the Hub would:

- POST /api/repos/create                            create a repository (409 when it exists), record visibility
- GET  /api/models/{repo}[/revision/{rev}]           repository info (private flag, head commit)
- POST /api/models/{repo}/branch/{branch}            create a branch from main (409 when it exists)
- POST /api/validate-yaml                            parse the card's YAML front matter (400 with errors if broken)
- POST /api/models/{repo}/preupload/{rev}            upload mode per file: "lfs" for binary content (a NUL byte in
                                                     the 512-byte sample) or size >= lfs_above, else "regular"
- POST /{repo}.git/info/lfs/objects/batch            LFS batch API: single PUT, or multipart above multipart_chunk
- PUT  /lfs/{oid}, PUT /lfs/{oid}/part/{n}           object bytes (sha256 checked against the oid on completion)
- POST /lfs/{oid}/complete, POST /lfs/verify         multipart completion, LFS verify
- POST /api/models/{repo}/commit/{rev}               ndjson commit: regular files (base64) and lfsFile pointers,
                                                     which must name an uploaded object of the right size

Every /api and batch request must carry `Authorization: Bearer <token>` (401 otherwise, as the Hub answers a bad
token). `fail` injects an HTTP error for a (method, path-prefix). Bounded: binds 127.0.0.1 only, socket timeouts,
a request cap, a body cap, and a lifetime after which it shuts itself down; `close()` stops it at once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

MAX_BODY = 64 * 1024 * 1024
MAX_REQUESTS = 2000


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Repo:
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    commits: list[dict[str, Any]] = field(default_factory=list)


class FakeHub:
    def __init__(self, token: str, *, lfs_above: int = 10 * 1024 * 1024, multipart_chunk: int | None = None,
                 lifetime: float = 120.0) -> None:
        self.token = token
        self.lfs_above = lfs_above
        self.multipart_chunk = multipart_chunk
        self.requests: list[Recorded] = []
        self.repos: dict[str, Repo] = {}
        self.created: list[dict[str, Any]] = []  # payloads of /api/repos/create
        self.upload_modes: dict[str, str] = {}  # path in repo -> "regular" | "lfs"
        self.objects: dict[str, bytes] = {}  # LFS oid -> content
        self.single_part: set[str] = set()
        self.multipart: set[str] = set()
        self.fail: dict[tuple[str, str], tuple[int, dict[str, str]]] = {}
        self._parts: dict[str, dict[int, bytes]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._connections: set[socket.socket] = set()  # kept-alive client sockets, cut on close()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._timer = threading.Timer(lifetime, self.close)
        self._timer.daemon = True
        self._closed = False

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._timer.cancel()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:  # handler threads blocked on a kept-alive socket return at once
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def closed(self) -> bool:
        return self._closed

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def tree(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        return dict(self.repos[repo_id].branches[branch])

    # --- routes ---------------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        """One request at a time (uploads come in parallel threads): the bookkeeping stays consistent."""
        with self._lock:
            self.requests.append(Recorded(method, path, headers, body))
            if len(self.requests) > MAX_REQUESTS:
                return 503, {"error": "request cap reached"}, {}
            return self._route(method, path, headers, body)

    def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        for (fail_method, prefix), (status, extra) in self.fail.items():
            if method == fail_method and path.startswith(prefix):
                return status, {"error": extra.get("X-Error-Message", "injected failure")}, extra
        needs_auth = path.startswith("/api/") or path.endswith("/info/lfs/objects/batch")
        if needs_auth and headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"error": "Invalid credentials in Authorization header"}, \
                {"X-Error-Message": "Invalid credentials in Authorization header"}
        for pattern, route in self._routes():
            match = re.fullmatch(pattern, f"{method} {path}")
            if match:
                return route(*[unquote(g) for g in match.groups()], body=body)
        return 404, {"error": f"no route {method} {path}"}, {}

    def _routes(self):
        repo = r"([^/]+/[^/]+)"
        return [
            (r"POST /api/repos/create", self._create),
            (rf"GET /api/models/{repo}", self._info),
            (rf"GET /api/models/{repo}/revision/([^/]+)", self._info),
            (rf"POST /api/models/{repo}/branch/([^/]+)", self._branch),
            (r"POST /api/validate-yaml", self._validate_yaml),
            (rf"POST /api/models/{repo}/preupload/([^/]+)", self._preupload),
            (rf"POST /{repo}\.git/info/lfs/objects/batch", self._batch),
            (r"PUT /lfs/([0-9a-f]{64})", self._put),
            (r"PUT /lfs/([0-9a-f]{64})/part/(\d+)", self._put_part),
            (r"POST /lfs/([0-9a-f]{64})/complete", self._complete),
            (r"POST /lfs/verify", self._verify),
            (rf"POST /api/models/{repo}/commit/([^/]+)", self._commit),
        ]

    def _repo(self, repo_id: str) -> Repo | None:
        return self.repos.get(repo_id)

    def _create(self, body: bytes):
        payload = json.loads(body)
        self.created.append(payload)
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}, {}
        self.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}, {}

    def _info(self, repo_id: str, revision: str = "main", body: bytes = b""):
        repo = self._repo(repo_id)
        if repo is None:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        sha = repo.commits[-1]["oid"] if repo.commits else "0" * 40
        return 200, {"id": repo_id, "private": repo.private, "sha": sha}, {}

    def _branch(self, repo_id: str, branch: str, body: bytes):
        repo = self._repo(repo_id)
        if repo is None:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        if branch in repo.branches:
            return 409, {"error": "Reference already exists"}, {}
        repo.branches[branch] = dict(repo.branches["main"])
        return 200, {}, {}

    def _validate_yaml(self, body: bytes):
        content = json.loads(body)["content"]
        match = re.match(r"^---\n(.*?\n)---\n", content, re.S)
        if not match:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}, {}
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as exc:
            return 400, {"errors": [{"message": f"invalid YAML: {exc}"}]}, {}
        if not isinstance(metadata, dict):
            return 400, {"errors": [{"message": "metadata is not a mapping"}]}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _preupload(self, repo_id: str, revision: str, body: bytes):
        if self._repo(repo_id) is None:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        files = []
        for item in json.loads(body)["files"]:
            sample = base64.b64decode(item["sample"])
            mode = "lfs" if b"\0" in sample or item["size"] >= self.lfs_above else "regular"
            self.upload_modes[item["path"]] = mode
            files.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": None})
        return 200, {"files": files}, {}

    def _batch(self, repo_id: str, body: bytes):
        payload = json.loads(body)
        objects = []
        for obj in payload["objects"]:
            oid, size = obj["oid"], obj["size"]
            if oid in self.objects:
                objects.append({"oid": oid, "size": size})  # already stored: no actions, nothing to send
                continue
            upload: dict[str, Any] = {"href": f"{self.url}/lfs/{oid}"}
            if self.multipart_chunk and size > self.multipart_chunk:
                parts = -(-size // self.multipart_chunk)
                upload = {"href": f"{self.url}/lfs/{oid}/complete",
                          "header": {"chunk_size": str(self.multipart_chunk),
                                     **{f"{n:05d}": f"{self.url}/lfs/{oid}/part/{n}" for n in range(1, parts + 1)}}}
            objects.append({"oid": oid, "size": size,
                            "actions": {"upload": upload, "verify": {"href": f"{self.url}/lfs/verify"}}})
        return 200, {"transfer": "basic", "objects": objects}, {}

    def _put(self, oid: str, body: bytes):
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {"error": "sha256 does not match the oid"}, {}
        self.objects[oid] = body
        self.single_part.add(oid)
        return 200, {}, {}

    def _put_part(self, oid: str, number: str, body: bytes):
        self._parts.setdefault(oid, {})[int(number)] = body
        return 200, {}, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}

    def _complete(self, oid: str, body: bytes):
        numbers = [part["partNumber"] for part in json.loads(body)["parts"]]
        stored = self._parts.pop(oid, {})
        if sorted(stored) != numbers:
            return 400, {"error": f"parts {numbers} do not match the uploaded {sorted(stored)}"}, {}
        content = b"".join(stored[n] for n in numbers)
        if hashlib.sha256(content).hexdigest() != oid:
            return 400, {"error": "assembled parts do not match the oid"}, {}
        self.objects[oid] = content
        self.multipart.add(oid)
        return 200, {}, {}

    def _verify(self, body: bytes):
        payload = json.loads(body)
        stored = self.objects.get(payload["oid"])
        if stored is None or len(stored) != payload["size"]:
            return 404, {"error": "object not found"}, {}
        return 200, {}, {}

    def _commit(self, repo_id: str, revision: str, body: bytes):
        repo = self._repo(repo_id)
        if repo is None:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        if revision not in repo.branches:
            return 404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"}
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header, operations = lines[0], lines[1:]
        if header.get("key") != "header":
            return 400, {"error": "first line must be the header"}, {}
        tree = dict(repo.branches[revision])
        for operation in operations:
            value = operation["value"]
            if operation["key"] == "file":
                tree[value["path"]] = base64.b64decode(value["content"])
            elif operation["key"] == "lfsFile":
                stored = self.objects.get(value["oid"])
                if stored is None or len(stored) != value["size"]:
                    return 422, {"error": f"LFS object of {value['path']} was not uploaded"}, {}
                tree[value["path"]] = stored
            else:
                return 400, {"error": f"unexpected operation {operation['key']}"}, {}
        oid = hashlib.sha1(body).hexdigest()
        repo.branches[revision] = tree
        repo.commits.append({"oid": oid, "revision": revision, "summary": header["value"]["summary"],
                             "description": header["value"].get("description", ""),
                             "paths": [op["value"]["path"] for op in operations]})
        return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                     "pullRequestUrl": None}, {}


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # a client that stalls mid-request cannot hold a thread for longer

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def setup(self) -> None:
            super().setup()
            hub.track(self.connection, True)

        def finish(self) -> None:
            hub.track(self.connection, False)
            super().finish()

        def _body(self) -> bytes | None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks, total = [], 0
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    total += size
                    if total > MAX_BODY:
                        return None
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return None if length > MAX_BODY else self.rfile.read(length)

        def _serve(self) -> None:
            if hub.closed:  # a kept-alive connection outliving the server gets no answer
                self.close_connection = True
                return
            body = self._body()
            if body is None:
                status, payload, extra = 413, {"error": "body too large"}, {}
                self.close_connection = True
            else:
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, extra = hub.handle(self.command, urlsplit(self.path).path, headers, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

    return Handler
