"""The paper's annotator (PAPER_FACTS §4): an LLM behind any OpenAI-compatible chat endpoint picks the most
logically difficult parts of a trace as verbatim snippets, which are located in the trace by fuzzy matching.

Requests use temperature 0, then 0.3 and 0.6 when an answer is unusable (no snippets, none found). Transport
faults (HTTP 429 / 5xx / 408 / 409, timeouts, connection errors, unreadable replies) are retried with
exponential backoff and seeded jitter; the OpenAI client's own retries are off so that this policy is the only
one. ``timeout_s`` is a deadline on the whole request (connecting, waiting, reading the reply), held by giving
each request its own HTTP client that a timer aborts (``transport``). A cancelled run (``RetryPolicy.cancel``)
ends the retry waits and aborts the requests in flight. The API key is read from the environment variable NAMED
by ``api_key_env`` and kept only in the client. ``prompt_style="authors"`` sends the authors' own prompt (their
system and user messages) and reads their fences.

``response_format="tagged"`` is an alternative to snippets: the LLM returns the whole trace with the tags
inserted, accepted only when removing the tags gives the original byte for byte ("text_altered" otherwise).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import openai

from splitlib import tags
from splitlib.annotate.base import (
    ANNOTATOR_CONFIGS,
    ANNOTATORS,
    Annotation,
    AnnotationFailure,
    Cancelled,
    RetryPolicy,
    Row,
    check_fraction,
)
from splitlib.annotate.matching import MatchConfig, locate_snippets
from splitlib.annotate.transport import DeadlineClient
from splitlib.params import ParamError, build
from splitlib.registry import Registry

log = logging.getLogger(__name__)

SNIPPET_OPEN, SNIPPET_CLOSE = "[[SNIPPET]]", "[[/SNIPPET]]"
TRACE_OPEN, TRACE_CLOSE = "[[TRACE]]", "[[/TRACE]]"
RETRYABLE_STATUS = (408, 409, 429)  # and every 5xx

LLM_PRESETS: Registry[dict[str, Any]] = Registry("llm preset", {
    # the paper's annotator: DeepSeek-V3 over DeepSeek's OpenAI-compatible API
    "paper": {"base_url": "https://api.deepseek.com", "model": "deepseek-chat", "api_key_env": "DEEPSEEK_API_KEY"},
})

_TASK = """Below is a step-by-step reasoning trace written while solving a problem. A small, fast model will write \
most traces like this one, and a large, slow model will take over only for their hardest parts. Your job is to \
pick those parts.

Select the most logically difficult parts of the trace: the steps where a weaker reasoner would most likely go \
wrong, such as non-obvious deductions, key insights, setting up the right equation, delicate calculations, case \
analyses, and checks that catch a mistake. Skip routine arithmetic, restatements of the problem and the final \
summary. Together the selected parts should cover about {percent}% of the trace (about {n_chars} characters).
"""

SNIPPETS_TEMPLATE = _TASK + """
Copy each selected part word for word from the trace as a short snippet (a phrase to a few sentences). Do not \
paraphrase, shorten, correct, reformat or add anything: every snippet must occur in the trace exactly, character \
for character. List the snippets in the order they occur. Write each snippet between two marker lines as shown, \
and write nothing else:
{snippet_open}
a snippet copied verbatim from the trace
{snippet_close}

The trace:
{trace_open}
{trace}
{trace_close}"""

TAGGED_TEMPLATE = _TASK + """
Return the whole trace unchanged, character for character, with {tag_open} written just before and {tag_close} \
just after each selected part (parts never nest or overlap). Write the result between the marker lines \
{trace_open} and {trace_close}, and write nothing else.

The trace:
{trace_open}
{trace}
{trace_close}"""

# The authors' prompt, word for word (abdelfattah-lab/SplitReason @ f87cddb, annotated_dataset/data_generator.py,
# call_deepseek_r1_for_difficult_snippets_fraction; their typos, em dash and trailing space kept). Placeholders as
# theirs: {percent} = int(100 * desired_fraction), {n_chars} = int(len(trace) * desired_fraction).
_AUTHORS_FENCES = "-----SNIPPET START-----\n<verbatim text>\n-----SNIPPET END-----\n"
AUTHORS_SYSTEM_TEMPLATE = (
    "You are DeepSeek-R1, a large reasoning model.\nWe will provide you with a chain-of-thought (CoT).\n\n"
    "Your task:\n1. Identify the logically complex or difficult portions of the CoT.\n"
    "2. Extract them verbatim in short snippets (a few lines, an equation, etc.)\u2014no huge paragraphs.\n"
    "3. The total length of the extracted snippets combined should be about {percent}%\n"
    "of the entire CoT (roughly {n_chars} characters), focusing only on the hardest parts.\n"
    "4. Return each snippet enclosed in:\n\n" + _AUTHORS_FENCES + "\n"
    "5. No extra commentary or text before/between/after these tags. \n"
    "6. If fewer parts truly deserve mention, return fewer.\n"
    "7. Do not paraphrase; preserve exact whitespace and punctuation from the CoT.\n"
    "8. If the problem is too easy, try to atleast give some 'relatively difficult' snippets regardless.\n"
    "9. Try to atleast provide 3-4 snippets even if the CoT is trivial.")
AUTHORS_USER_TEMPLATE = (
    "Chain-of-thought (CoT):\n{trace}\n\nPlease produce short difficult/complex snippets, totalling ~{percent}%\n"
    "of the CoT length (about {n_chars} characters if possible).\nEach snippet must be verbatim, enclosed in the "
    "tags:\n\n" + _AUTHORS_FENCES + "\n"
    "Provide some snippets even if the CoT is trivial. No other text or commentary outside the tags.")
_AUTHORS_SNIPPET_RE = re.compile(  # their regex, without their fallback (every line of a reply with no fences)
    r"-{3,}\s*SNIPPET\s+START\s*-{3,}\s*(.*?)\s*-{3,}\s*SNIPPET\s+END\s*-{3,}", re.DOTALL)
PromptStyle = Literal["project", "authors"]

_SNIPPET_RE = re.compile(
    r"^[ \t]*" + re.escape(SNIPPET_OPEN) + r"[ \t]*\r?\n(.*?)\r?\n[ \t]*" + re.escape(SNIPPET_CLOSE) + r"[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_TRACE_RE = re.compile(
    r"^[ \t]*" + re.escape(TRACE_OPEN) + r"[ \t]*\n(.*)\n[ \t]*" + re.escape(TRACE_CLOSE) + r"[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class LLMConfig:
    base_url: str  # OpenAI-compatible endpoint, e.g. "https://api.deepseek.com" or "http://127.0.0.1:8000/v1"
    model: str  # the name the server serves the model under ("deepseek-chat"; vLLM: --served-model-name)
    api_key_env: str | None = None  # NAME of the environment variable holding the key; None for keyless servers
    target_fraction: float = 0.20  # share of the trace to select (PAPER_FACTS §4)
    temperatures: tuple[float, ...] = (0.0, 0.3, 0.6)  # first request, then retries after unusable answers
    max_response_tokens: int = 4096
    response_format: Literal["snippets", "tagged"] = "snippets"
    prompt_template: str | None = None  # None: SNIPPETS_TEMPLATE / TAGGED_TEMPLATE (same placeholders)
    prompt_style: PromptStyle = "project"  # "authors": their system + user prompt and fences (snippets only)
    match: MatchConfig = field(default_factory=MatchConfig)

    def __post_init__(self) -> None:
        check_fraction("target_fraction", self.target_fraction)
        if not self.temperatures or any(not 0.0 <= t <= 2.0 for t in self.temperatures):
            raise ValueError(f"temperatures={self.temperatures}: expected a non-empty sequence of values in [0, 2]")
        if self.response_format not in ("snippets", "tagged"):
            raise ValueError(f"response_format={self.response_format!r}: expected 'snippets' or 'tagged'")
        if self.prompt_style not in ("project", "authors") or self.prompt_style == "authors" and (
                self.response_format != "snippets" or self.prompt_template):
            raise ValueError(f"prompt_style={self.prompt_style!r}: expected 'project', or 'authors' (their own prompt, "
                             "for snippets) with response_format: snippets and no prompt_template")
        if self.max_response_tokens < 1:
            raise ValueError(f"max_response_tokens={self.max_response_tokens}: expected >= 1")


def parse_snippets(content: str, style: PromptStyle = "project") -> list[str]:
    """The snippets fenced between the marker lines that ``style``'s prompt asks for (surrounding whitespace
    stripped, empty ones dropped)."""
    pattern = _AUTHORS_SNIPPET_RE if style == "authors" else _SNIPPET_RE
    return [s.strip() for s in pattern.findall(content) if s.strip()]


def parse_tagged(content: str) -> str | None:
    """The tagged trace between the trace marker lines, or None."""
    m = _TRACE_RE.search(content)
    return None if m is None else m.group(1)


def spans_from_tagged(tagged: str, original: str) -> tuple[tuple[int, int], ...]:
    """Spans of a tagged copy of ``original``; failures: "text_altered", "malformed_tags", "no_spans"."""
    if tags.strip_tags(tagged) != original:
        raise AnnotationFailure("text_altered")
    if not tags.check(tagged).balanced:
        raise AnnotationFailure("malformed_tags")
    found = tags.spans(tagged)
    if any(s == e for s, e in found):
        raise AnnotationFailure("malformed_tags")  # an empty <bigmodel></bigmodel> pair
    if not found:
        raise AnnotationFailure("no_spans")
    return tuple(found)


class _Unreadable(Exception):
    """A reply that is not a chat completion."""


class _Transient(Exception):
    """A retryable transport fault: ``kind`` names it ("http_429", "timeout", "connection", …)."""

    def __init__(self, kind: str, retry_after_s: float | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.retry_after_s = retry_after_s


def _field(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def reply_text(response: Any) -> str:
    """The assistant text of a chat completion ("" when the message has no content)."""
    choices = _field(response, "choices")
    if not isinstance(choices, list) or not choices:
        raise _Unreadable
    message = _field(choices[0], "message")
    if message is None:
        raise _Unreadable
    content = _field(message, "content")
    if content is not None and not isinstance(content, str):
        raise _Unreadable
    return content or ""


def _retry_after_s(err: openai.APIStatusError) -> float | None:
    value = err.response.headers.get("retry-after") if err.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to the backoff schedule


def backoff_s(attempt: int, retry: RetryPolicy, rng: random.Random, retry_after_s: float | None = None) -> float:
    """Wait before retry number ``attempt + 1``: exponential, capped, jittered; at least a server's Retry-After."""
    wait = min(retry.max_backoff_s, retry.backoff_s * 2**attempt) * (1.0 + retry.jitter * rng.random())
    if retry_after_s is not None:
        wait = max(wait, min(retry_after_s, retry.max_backoff_s))
    return wait


class LLMAnnotator:
    name = "llm"

    def __init__(self, cfg: LLMConfig, client: Any = None) -> None:
        self.cfg = cfg
        self._client = client if client is not None else openai.OpenAI(
            base_url=cfg.base_url, api_key=_api_key(cfg.api_key_env), max_retries=0)
        self._tls = _tls_context()  # shared by the per-request HTTP clients (building one per client costs ~25 ms)

    @property
    def template(self) -> str:
        if self.cfg.prompt_style == "authors":  # their system and user templates (what describe() hashes)
            return AUTHORS_SYSTEM_TEMPLATE + "\n\n" + AUTHORS_USER_TEMPLATE
        default = SNIPPETS_TEMPLATE if self.cfg.response_format == "snippets" else TAGGED_TEMPLATE
        return self.cfg.prompt_template or default

    def prompt(self, trace: str) -> str:  # the user message (the only message in the project's style)
        return self.messages(trace)[-1]["content"]

    def messages(self, trace: str) -> list[dict[str, str]]:
        """The chat messages sent for ``trace``."""
        fraction = self.cfg.target_fraction
        if self.cfg.prompt_style == "authors":  # their rounding: int(), as in data_generator.py
            share = {"percent": int(fraction * 100), "n_chars": int(len(trace) * fraction)}
            return [{"role": "system", "content": AUTHORS_SYSTEM_TEMPLATE.format(**share)},
                    {"role": "user", "content": AUTHORS_USER_TEMPLATE.format(trace=trace, **share)}]
        return [{"role": "user", "content": self.template.format(
            trace=trace, percent=round(100 * fraction), n_chars=round(fraction * len(trace)), snippet_open=SNIPPET_OPEN,
            snippet_close=SNIPPET_CLOSE, trace_open=TRACE_OPEN, trace_close=TRACE_CLOSE, tag_open=tags.OPEN,
            tag_close=tags.CLOSE)}]

    def describe(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self.cfg)
        cfg.pop("prompt_template")
        if cfg["prompt_style"] == "project":  # absent, as before the switch existed, so older folders still resume
            cfg.pop("prompt_style")
        cfg["prompt_sha256"] = hashlib.sha256(self.template.encode()).hexdigest()[:16]
        return {"name": self.name, **cfg}

    def annotate(self, row: Row, retry: RetryPolicy) -> Annotation:
        text = row["trace"]
        messages = self.messages(text)
        rng = random.Random(f"{retry.seed}:{row['id']}")
        failure = AnnotationFailure("no_snippets")
        for n, temperature in enumerate(self.cfg.temperatures, 1):
            content = self._complete(messages, temperature, retry, rng)
            try:
                spans, details = self._read(content, text)
            except AnnotationFailure as f:
                log.info("trace %s: %s at temperature %s", row["id"], f.reason, temperature)
                failure = f
                continue
            return Annotation(spans=spans, details={**details, "temperature": temperature, "answers": n})
        raise AnnotationFailure(failure.reason, **failure.details, answers=len(self.cfg.temperatures))

    def _read(self, content: str, text: str) -> tuple[tuple[tuple[int, int], ...], dict[str, Any]]:
        if self.cfg.response_format == "tagged":
            tagged = parse_tagged(content)
            if tagged is None:
                raise AnnotationFailure("no_tagged_trace")
            return spans_from_tagged(tagged, text), {}
        snippets = parse_snippets(content, self.cfg.prompt_style)
        if not snippets:
            raise AnnotationFailure("no_snippets")
        found = locate_snippets(snippets, text, self.cfg.match)
        if not found.spans:
            raise AnnotationFailure("snippet_not_found", n_snippets=len(snippets))
        ratios = [m.ratio for m in found.matches if m is not None]
        details = {"n_snippets": len(snippets), "n_found": found.n_found,
                   "n_refined": sum(1 for m in found.matches if m is not None and m.refined),
                   "min_match_ratio": round(min(ratios), 4)}
        return tuple(found.spans), details

    def _complete(self, messages: list[dict[str, str]], temperature: float, retry: RetryPolicy, rng: random.Random) -> str:
        """One answer, retrying transport faults; raises AnnotationFailure("<kind>_exhausted" / "http_<status>"),
        or ``Cancelled`` as soon as the run is stopped."""
        for attempt in range(retry.max_retries + 1):
            if retry.cancel.is_set():
                raise Cancelled
            try:
                return self._request(messages, temperature, retry)
            except _Transient as fault:
                if attempt == retry.max_retries:
                    reason = fault.kind if fault.kind == "malformed_response" else f"{fault.kind}_exhausted"
                    raise AnnotationFailure(reason, requests=attempt + 1) from None
                wait = backoff_s(attempt, retry, rng, fault.retry_after_s)
                log.debug("%s; retry %d in %.2f s", fault.kind, attempt + 1, wait)
                retry.pause(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _request(self, messages: list[dict[str, str]], temperature: float, retry: RetryPolicy) -> str:
        """The reply text within ``retry.timeout_s`` in total; raises _Transient for retryable faults (the deadline
        passing is "timeout"), AnnotationFailure for other HTTP errors, Cancelled when the run is stopped."""
        if not hasattr(self._client, "with_options"):  # an injected client without per-request HTTP clients
            return self._call(self._client, messages, temperature, retry.timeout_s)
        with DeadlineClient(retry.timeout_s, self._http_client) as deadline, retry.cancel.on_cancel(deadline.abort):
            try:
                return self._call(self._client.with_options(http_client=deadline.http), messages, temperature,
                                  retry.timeout_s)
            except _Transient:
                if retry.cancel.is_set():
                    raise Cancelled from None
                if deadline.expired:
                    raise _Transient("timeout") from None
                raise

    def _http_client(self, **kwargs: Any) -> Any:
        """A fresh HTTP client for one request (its sockets are that request's alone)."""
        return openai.DefaultHttpxClient(verify=self._tls, **kwargs)

    def _call(self, client: Any, messages: list[dict[str, str]], temperature: float, timeout_s: float) -> str:
        try:
            response = client.chat.completions.create(
                model=self.cfg.model, messages=messages, temperature=temperature,
                max_tokens=self.cfg.max_response_tokens, timeout=timeout_s)
            return reply_text(response)
        except openai.APITimeoutError:
            raise _Transient("timeout") from None
        except openai.APIConnectionError:
            raise _Transient("connection") from None
        except openai.APIStatusError as err:
            if err.status_code < 500 and err.status_code not in RETRYABLE_STATUS:
                raise AnnotationFailure(f"http_{err.status_code}") from None
            raise _Transient(f"http_{err.status_code}", _retry_after_s(err)) from None
        except (_Unreadable, json.JSONDecodeError, openai.APIResponseValidationError):
            raise _Transient("malformed_response") from None


def _tls_context() -> ssl.SSLContext:
    """The CA bundle the HTTP library would load: $SSL_CERT_FILE, else certifi's, else the system's."""
    cafile = os.environ.get("SSL_CERT_FILE")
    if cafile is None:
        try:
            import certifi  # installed with the OpenAI client's HTTP library
        except ImportError:
            return ssl.create_default_context()
        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile)


def _api_key(env_name: str | None) -> str:
    if env_name is None:
        return "EMPTY"  # keyless servers (a local vLLM) still need a non-empty string
    key = os.environ.get(env_name)
    if not key:
        raise ValueError(f"api_key_env={env_name!r}: the environment variable {env_name} is not set; export it "
                         "(keys are read from the environment only, never from parameters or files)")
    return key


@ANNOTATOR_CONFIGS.register("llm")
def llm_config(params: Mapping[str, Any], prefix: str = "") -> LLMConfig:
    """``LLMConfig`` from a preset (``preset: paper``) overridden by explicit settings (``model`` included)."""
    params = dict(params)
    preset = params.pop("preset", None)
    if preset is not None and not isinstance(preset, str):
        raise ParamError(f"parameter {prefix}preset={preset!r}: expected one of {', '.join(LLM_PRESETS.names())}")
    merged = {**(LLM_PRESETS[preset] if preset is not None else {}), **params}
    for key in ("base_url", "model"):
        if not merged.get(key):
            raise ParamError(f"parameter {prefix}{key} is missing: the llm annotator needs {key!r} "
                             f"(or preset: {' / '.join(LLM_PRESETS.names())})")
    return build(LLMConfig, merged, prefix)


@ANNOTATORS.register("llm")
def make_llm(client: Any = None, **params: Any) -> LLMAnnotator:
    """``get_annotator("llm", preset="paper")`` or explicit ``base_url``/``model``/``api_key_env``/… (a preset's
    values can be overridden, e.g. ``model``); ``client`` replaces the OpenAI client (anything with
    ``chat.completions.create``; the per-request deadline needs ``with_options``, as ``openai.OpenAI`` has)."""
    return LLMAnnotator(llm_config(params), client=client)
