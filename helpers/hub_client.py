"""A simulated student: logs in through JupyterHub's REST API, starts a server and a kernel, runs a notebook.

What a browser does, done with plain HTTP and the kernel's websocket (Jupyter's messaging protocol),
so that a test can be a class: :class:`Student` asks the hub for a token with its name and the class
password, starts its server, opens a notebook (a session: one kernel per notebook) and sends each code
cell to the kernel as an ``execute_request``, as "Run all" does. Every request goes to the hub's
address (127.0.0.1), every wait has a deadline. Used by tests/test_hub.py and helpers.hub_load.
"""
import asyncio
import json
import time
import uuid
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

AsyncHTTPClient.configure(None, max_clients=100)  # a class of students shares this process's client
OUTPUTS = ("stream", "display_data", "execute_result", "error")


class HubError(RuntimeError):
    """A request to the hub or a student's server failed, or a kernel did not answer in time."""


class Student:
    """One student of the class at ``hub_url`` (``http://127.0.0.1:PORT``)."""

    def __init__(self, hub_url, name, password):
        if not hub_url.startswith(("http://127.0.0.1:", "http://localhost:")):
            raise ValueError(f"the load test talks to a hub on this machine only (127.0.0.1), got {hub_url!r}")
        self.hub, self.name, self.password = hub_url.rstrip("/"), name, password
        self.token = None

    async def request(self, method, path, body=None, *, timeout=60, ok=(200, 201, 202, 204)):
        """``method path`` on the hub (``/hub/api/...``) or the student's server (``/user/<name>/...``)."""
        headers = {"Authorization": f"token {self.token}"} if self.token else {}
        request = HTTPRequest(self.hub + path, method=method, headers=headers, request_timeout=timeout,
                              body=None if body is None and method in ("GET", "DELETE") else json.dumps(body or {}))
        try:
            reply = await AsyncHTTPClient().fetch(request, raise_error=False)
        except OSError as error:
            raise HubError(f"{self.name}: {method} {path}: {error}") from None
        if reply.code not in ok:
            text = reply.body.decode(errors="replace")[:300] if reply.body else ""
            raise HubError(f"{self.name}: {method} {path} answered {reply.code}: {text}")
        return json.loads(reply.body) if reply.body else None

    async def login(self):
        """Log in with the class password through the REST API: the hub gives a token for this student."""
        reply = await self.request("POST", f"/hub/api/users/{self.name}/tokens",
                                   {"auth": {"username": self.name, "password": self.password},
                                    "note": "simulated student", "expires_in": 4 * 3600})
        self.token = reply["token"]
        return self

    async def start_server(self, timeout=300):
        """Start this student's server (when it is not running) and wait until the hub says it is ready."""
        await self.request("POST", f"/hub/api/users/{self.name}/server", ok=(201, 202, 400))  # 400: running
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = (await self.request("GET", f"/hub/api/users/{self.name}"))["servers"].get("")
            if server and server["ready"]:
                return server
            await asyncio.sleep(0.5)
        raise HubError(f"{self.name}: the server was not ready within {timeout} s")

    async def stop_server(self):
        await self.request("DELETE", f"/hub/api/users/{self.name}/server", ok=(202, 204))

    def api(self, method, path, body=None, **kwargs):
        """The student's own Jupyter server: ``api("GET", "contents/notebooks")``."""
        return self.request(method, f"/user/{self.name}/api/{path}", body, **kwargs)

    async def open_notebook(self, path, timeout=120):
        """Open ``path`` (relative to the home) as the browser does: a session, whose kernel is returned."""
        session = await self.api("POST", "sessions", {"path": path, "type": "notebook", "name": "",
                                                      "kernel": {"name": "python3"}})
        kernel = Kernel(self, session["kernel"]["id"])
        await kernel.connect(timeout)
        return kernel


class Kernel:
    """The websocket to one kernel of a student's server, speaking Jupyter's messaging protocol."""

    def __init__(self, student, kernel_id):
        self.student, self.id = student, kernel_id
        self.session = uuid.uuid4().hex
        self.socket = None

    async def connect(self, timeout=120):
        """Open the websocket and wait until the kernel answers a ``kernel_info_request``."""
        url = (self.student.hub.replace("http", "ws", 1)
               + f"/user/{self.student.name}/api/kernels/{self.id}/channels?session_id={self.session}")
        request = HTTPRequest(url, headers={"Authorization": f"token {self.student.token}"}, request_timeout=timeout)
        self.socket = await websocket_connect(request)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # the kernel may still be starting: ask again until it answers
            msg_id = self._send("kernel_info_request", {})
            with_reply = await self._until(lambda m: m["parent_header"].get("msg_id") == msg_id
                                           and m["msg_type"] == "kernel_info_reply", min(10, deadline - time.monotonic()))
            if with_reply:
                return self
        raise HubError(f"{self.student.name}: the kernel did not answer within {timeout} s")

    def _send(self, msg_type, content, channel="shell"):
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": msg_type, "session": self.session, "username": self.student.name,
                  "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "version": "5.3"}
        self.socket.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                                              "content": content, "channel": channel, "buffers": []}))
        return msg_id

    async def receive(self, timeout):
        """The next message from the kernel (a dict), or None after ``timeout`` seconds."""
        try:
            raw = await asyncio.wait_for(self.socket.read_message(), timeout)
        except asyncio.TimeoutError:
            return None
        if raw is None:
            raise HubError(f"{self.student.name}: the kernel's websocket closed")
        if isinstance(raw, bytes):  # a message with binary buffers: offsets, then the JSON part first
            count = int.from_bytes(raw[:4], "big")
            offsets = [int.from_bytes(raw[4 * (i + 1): 4 * (i + 2)], "big") for i in range(count)]
            raw = raw[offsets[0]: offsets[1] if count > 1 else None].decode()
        message = json.loads(raw)
        message["msg_type"] = message["header"]["msg_type"]
        return message

    async def _until(self, wanted, timeout):
        deadline = time.monotonic() + max(timeout, 0)
        while (left := deadline - time.monotonic()) > 0:
            message = await self.receive(left)
            if message is not None and wanted(message):
                return message
        return None

    async def execute(self, code, timeout=600, on_output=None):
        """Run ``code``; returns ``{"status": "ok"|"error"|"died", "outputs": [...], "error": ...}``.

        ``on_output`` is called with the time of each output message (the test's "first output").
        "died": the kernel restarted during the run (it was killed), so this cell's result is lost.
        """
        msg_id = self._send("execute_request", {"code": code, "silent": False, "store_history": True,
                                                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
        outputs, reply, idle = [], None, False
        deadline = time.monotonic() + timeout
        while not (reply and idle):
            left = deadline - time.monotonic()
            message = await self.receive(left) if left > 0 else None
            if message is None:
                raise HubError(f"{self.student.name}: a cell ran past {timeout} s")
            if message["msg_type"] == "status" and message["content"]["execution_state"] in ("restarting", "dead"):
                return {"status": "died", "outputs": outputs, "error": "the kernel restarted during the run"}
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] in OUTPUTS:
                outputs.append(message["content"])
                if on_output:
                    on_output(time.monotonic())
            elif message["msg_type"] == "execute_reply":
                reply = message["content"]
            elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                idle = True
        error = None if reply["status"] == "ok" else f"{reply.get('ename')}: {reply.get('evalue')}"
        return {"status": reply["status"], "outputs": outputs, "error": error}

    async def run_notebook(self, cells, timeout=600, on_output=None):
        """Run code ``cells`` (strings) in order, as "Run all": stops at the first error.
        Returns ``(number of cells run, error or None)``."""
        for number, code in enumerate(cells, 1):
            result = await self.execute(code, timeout, on_output)
            if result["status"] != "ok":
                return number, f"cell {number}: {result['error']}"
        return len(cells), None

    def close(self):
        if self.socket is not None:
            self.socket.close()


def code_cells(notebook):
    """The code of each non-empty code cell of a notebook file, in order."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    sources = ("".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells
               if c["cell_type"] == "code")
    return [s for s in sources if s.strip()]


