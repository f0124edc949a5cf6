"""A fault-injecting OpenAI-compatible chat server on 127.0.0.1, and helpers to read what an annotation run wrote.

Shared by tests/test_annotate.py and tests/test_faults_annotate.py. Each trace's replies are scripted by the case
name in its first sentence ("Case <name>. ..."); see ``FakeChat``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from splitlib import runs, tags
from splitlib.annotate import ANNOTATED, FAILURES
from splitlib.annotate.llm import SNIPPET_CLOSE, SNIPPET_OPEN, TRACE_CLOSE, TRACE_OPEN

SENTENCE = "The key insight is that four squared is sixteen, which is even."
TEXT = "We start from x + 3 = 7. Subtracting three gives x = 4. " + SENTENCE + " Therefore the answer is 16."
# in every error body and garbage reply: a test asserts that it never reaches an output file
SERVER_TEXT = "SERVER-SAYS-SOMETHING-WENT-WRONG"


def toy_answer_trace(case: str) -> str:
    return f"Case {case}. " + TEXT


def snippet_reply(*snippets: str) -> str:
    return "Here you go.\n" + "".join(f"{SNIPPET_OPEN}\n{s}\n{SNIPPET_CLOSE}\n" for s in snippets)


def completion(content: str) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: more simultaneous connections have their SYN dropped and retried by
    # the client's kernel a second later, which a test of 1 s deadlines would read as a timeout
    request_queue_size = 128


class FakeChat:
    """Chat completions on 127.0.0.1; each trace's replies are scripted by the case name in its first sentence.

    Behaviours: ok, typo, absent, none (no markers), tagged_ok, altered (tagged, one character changed), 429, 401,
    500 (any status code), timeout (sleeps ``sleep_s`` then answers ok), slow (sleeps ``slow_s`` then answers ok),
    hang (never answers until the server closes), drip (answers ok one byte every ``drip_s``), malformed (invalid
    JSON), garbage (an HTML page with status 200), no_choices, drop (closes the connection). A list scripts
    successive requests (the last one repeats). ``requests`` records (case, temperature), ``models`` the model
    names asked for, ``auth`` the Authorization headers.
    """

    def __init__(self, sleep_s: float = 2.0, slow_s: float = 0.15, drip_s: float = 0.5) -> None:
        self.script: dict[str, list[str]] = {}
        self.sleep_s, self.slow_s, self.drip_s = sleep_s, slow_s, drip_s
        self.requests: list[tuple[str, float]] = []
        self.models: list[str] = []
        self.auth: set[str] = set()
        self._lock = threading.Lock()
        self._count: dict[str, int] = {}
        self._closing = threading.Event()
        self._active = 0  # requests being handled now
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                with fake._lock:
                    fake._active += 1
                try:
                    self._post()
                finally:
                    with fake._lock:
                        fake._active -= 1

            def _post(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.auth.add(self.headers.get("Authorization", ""))
                prompt = body["messages"][-1]["content"]
                case = re.search(r"Case (\w+)\.", prompt).group(1)
                behaviour = fake.next_behaviour(case, body.get("temperature"), body.get("model"))
                fake.respond(self, behaviour, prompt)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def next_behaviour(self, case: str, temperature: float, model: str | None = None) -> str:
        with self._lock:
            n = self._count.get(case, 0)
            self._count[case] = n + 1
            self.requests.append((case, temperature))
            self.models.append(model)
        plan = self.script[case]
        return plan[min(n, len(plan) - 1)]

    def wait_idle(self, settle_s: float = 0.3, timeout_s: float = 30.0) -> None:
        """Return once no request has been in hand for ``settle_s`` (a request sent just before may still be on its
        way into a handler)."""
        deadline, quiet_since = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            with self._lock:
                busy = self._active > 0
            now = time.monotonic()
            quiet_since = None if busy else (quiet_since or now)
            if quiet_since is not None and now - quiet_since >= settle_s:
                return
            time.sleep(0.02)
        raise TimeoutError(f"the fake server still handles {self._active} request(s) after {timeout_s} s")

    def reset(self) -> None:
        with self._lock:
            self._count.clear()
            self.requests.clear()
            self.models.clear()

    def respond(self, handler: BaseHTTPRequestHandler, behaviour: str, prompt: str) -> None:
        trace = prompt.split(f"{TRACE_OPEN}\n", 1)[1].rsplit(f"\n{TRACE_CLOSE}", 1)[0]
        hard = trace.index(SENTENCE)
        contents = {
            "ok": snippet_reply(SENTENCE),
            "typo": snippet_reply(SENTENCE.replace("insight", "insigth")),
            "absent": snippet_reply("QQQQ ZZZZ 9999 #### @@@@", "!!!! %%%% ^^^^ &&&&"),
            "none": "The hardest part is clearly the algebra.",
            "tagged_ok": f"{TRACE_OPEN}\n{tags.apply_spans(trace, [(hard, hard + 10)])}\n{TRACE_CLOSE}",
            "altered": f"{TRACE_OPEN}\n{tags.OPEN}{trace.replace('x = 4', 'x=4')}{tags.CLOSE}\n{TRACE_CLOSE}",
        }
        ok = json.dumps(completion(snippet_reply(SENTENCE))).encode()
        if behaviour in contents:
            return self._send(handler, 200, json.dumps(completion(contents[behaviour])).encode())
        if behaviour in ("timeout", "slow"):
            time.sleep(self.sleep_s if behaviour == "timeout" else self.slow_s)
            return self._send(handler, 200, ok)
        if behaviour == "hang":
            self._closing.wait()
            handler.close_connection = True
            return None
        if behaviour == "drip":
            return self._send(handler, 200, ok, drip_s=self.drip_s)
        if behaviour == "malformed":
            return self._send(handler, 200, b'{"choices": [ not json')
        if behaviour == "garbage":
            page = f"<html><body><h1>502 Bad Gateway</h1>{SERVER_TEXT}</body></html>".encode()
            return self._send(handler, 200, page, content_type="text/html")
        if behaviour == "no_choices":
            return self._send(handler, 200, b'{"id": "x", "object": "chat.completion"}')
        if behaviour == "drop":
            handler.close_connection = True
            return None
        status = int(behaviour)
        self._send(handler, status, json.dumps({"error": {"message": SERVER_TEXT, "code": status}}).encode())

    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json",
              drip_s: float = 0.0) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if not drip_s:
                handler.wfile.write(body)
                return
            for i in range(len(body)):  # a server that keeps the connection busy, one byte at a time
                if self._closing.wait(drip_s):
                    return
                handler.wfile.write(body[i : i + 1])
                handler.wfile.flush()
        except OSError:  # the client gave up (timeout, deadline, cancelled run): nothing to answer
            handler.close_connection = True

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()


# -- reading what a run wrote -------------------------------------------------------------------------------------
def rows_for(cases: list[str]) -> list[dict]:
    return [{"id": f"t-{c}", "question": f"question {c}", "answer": "16", "trace": toy_answer_trace(c)} for c in cases]


def read_out(out: Path) -> tuple[list[dict], list[dict]]:
    return runs.read_jsonl(out / ANNOTATED), runs.read_jsonl(out / FAILURES)


def sorted_rows(out: Path) -> tuple[list[dict], list[dict]]:
    annotated, failures = read_out(out)
    return sorted(annotated, key=lambda r: r["id"]), sorted(failures, key=lambda r: r["id"])


def assert_exactly_one_row_each(rows: list[dict], out: Path) -> tuple[dict, dict]:
    """Every input id is in exactly one of annotated.jsonl / failures.jsonl, once; returns both by id."""
    annotated, failures = read_out(out)
    ids_a, ids_f = [r["id"] for r in annotated], [r["id"] for r in failures]
    assert len(ids_a) == len(set(ids_a)) and len(ids_f) == len(set(ids_f)), "duplicate rows"
    assert not set(ids_a) & set(ids_f), "an id in both files"
    assert set(ids_a) | set(ids_f) == {r["id"] for r in rows}, "an input without a row"
    return {r["id"]: r for r in annotated}, {r["id"]: r for r in failures}
