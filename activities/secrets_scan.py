"""One secrets scanner for everything ticketflow checks or lets out: diffs, commit messages, free text.

It is built on every plugin detect-secrets ships (27 in 1.5.0: AWS, GitHub, GitLab, Slack, Stripe, JWT,
private keys, basic auth in URLs, the keyword detector, base64/hex entropy, ...), with its heuristic
false-positive filters, plus what detect-secrets misses and ticketflow needs:

* keyword values in env-style files. detect-secrets' KeywordDetector only accepts unquoted values in the
  file types it calls config (.yaml, .ini, .toml, .properties, .cfg, .conf); anywhere else a value must be
  quoted, so `DB_PASSWORD=hunter2-prod` in `prod.env` passed. Here `.env`, `*.env`, `.env.*`, `.envrc`,
  shell scripts, Dockerfiles and `.npmrc`/`.pypirc` use its config rules, and a wider keyword list
  (token, credential, access key, auth, private key, ...) matches `KEY=value` / `KEY: value` with any
  value of at least MIN_KEYWORD_VALUE characters that is not a reference (`${X}`, `$X`, `{{ x }}`, `<x>`);
* unquoted high-entropy values: detect-secrets' entropy plugins only look inside quotes. An unquoted
  assignment value in a config-like file (or in free text) counts when it is one token of at least
  MIN_ENTROPY_LENGTH characters with upper case, lower case and a digit and at least ENTROPY_BITS bits
  of Shannon entropy per character; an all-hex value needs a secret-sounding key;
* whole PEM blocks (BEGIN ... END, body included) and PEM body lines on their own;
* AWS secret access keys (40 characters) next to an access key id or an aws_secret key, Slack webhooks,
  GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_), userinfo in URLs, password assignments.

Deliberately not honoured: detect-secrets' `pragma: allowlist secret` (an agent could write it).

Two uses. `scan_diff`/`scan_text` return hits (file, line, kind, value) for the review and open_pr; the
value never leaves the process, findings built from hits name the kind and place only. `redact_text`
masks every value a scan finds, for text that leaves an activity (logs, status, history, PR bodies).
Plugins are instantiated once and are stateless here, so scans need no lock and no global settings.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import PurePosixPath
from typing import Any

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.filters import heuristic
from detect_secrets.plugins.base import BasePlugin
from detect_secrets.plugins.keyword import CONFIG_DENYLIST_REGEX_TO_GROUP, KeywordDetector
from unidiff.patch import PatchSet

MASK = "***"
MIN_KEYWORD_VALUE = 4
MIN_ENTROPY_LENGTH = 20
ENTROPY_BITS = 3.7
# detect-secrets' own defaults for quoted strings, kept as they are.
BASE64_LIMIT = 4.5
HEX_LIMIT = 3.0

# ------------------------------------------------------------------------------------------ hits


@dataclass(frozen=True)
class SecretHit:
    """A possible secret: where and what kind. `value` is for matching and masking, never for output."""

    kind: str
    line: int
    value: str = ""
    file: str | None = None

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.value.encode()).hexdigest()

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.file else f"line {self.line}"


# ---------------------------------------------------------------------------------- file types

_ENV_NAMES = {".env", ".envrc", ".npmrc", ".pypirc", ".netrc", ".pgpass", "dockerfile", "containerfile"}
_ENV_SUFFIXES = (".env", ".sh", ".bash", ".zsh", ".envrc", ".dockerfile")
_CONFIG_SUFFIXES = (".yaml", ".yml", ".eyaml", ".ini", ".toml", ".properties", ".cfg", ".conf", ".cnf", ".cf")


def is_config_like(path: str | None) -> bool:
    """Files whose values are usually unquoted: env files, shell, Dockerfiles and config formats.

    None (free text: agent output, messages, logs) counts as config-like too.
    """
    if path is None:
        return True
    name = PurePosixPath(path).name.lower()
    return (
        name in _ENV_NAMES
        or name.startswith(".env.")
        or name.endswith(_ENV_SUFFIXES)
        or name.endswith(_CONFIG_SUFFIXES)
    )


# ------------------------------------------------------------------------------- extra detectors

_KEYWORDS = (
    r"pass(?:word|wd|phrase)?(?![a-z])|pwd|secret|token|api_?key|apikey|access_?key|auth_?(?:key|token)|"
    r"credentials?|private_?key|priv_?key|client_?key|signing_?key|encryption_?key|session_?key|"
    r"bearer|webhook|dsn|conn(?:ection)?_?str(?:ing)?|contrase[ñn]a"
)
# KEY = value / KEY: value / export KEY=value / "key": "value"; the key holds a keyword somewhere.
# A quoted value may hold spaces, an unquoted one is one token.
_ASSIGNMENT = re.compile(
    r"(?i)(?P<key>[\w.-]*(?:" + _KEYWORDS + r")[\w.-]*)[\"']?\s*(?::=|=>|[:=](?![:=]))\s*"
    r"(?:(?P<quote>[\"'`])(?P<quoted>[^\"'`\n]+)(?P=quote)|(?P<value>[^\s\"'`,;]+))"
)
_KEYWORD = re.compile(_KEYWORDS, re.IGNORECASE)
_LONG_RUN = re.compile(r"[A-Za-z0-9+/=_.~-]{20,}")
_KEEP_KEY = re.compile(r"(?i)webhook|dsn")
# Keys that name a secret's metadata, not the secret: token_url, password_file, secret_name, ...
_METADATA_KEY = re.compile(
    r"(?i)[_.-](?:url|uri|file|path|dir|name|length|len|size|id|type|enabled|ttl|timeout|expiry|expires|"
    r"header|field|env|var|count|min|max|policy|prompt|rotation|source|provider|ref|kind|mode)s?$"
)
_ANY_ASSIGNMENT = re.compile(
    r"""(?x)(?:^|[\s{,(])(?P<key>[\w.-]+)["']?\s*(?::=|[:=])\s*["']?(?P<value>[A-Za-z0-9+/=_.~-]{20,})["']?\s*(?:[,;#]|$)"""
)
_REFERENCE = re.compile(
    r"""^(?:\$\{.*\}|\$\(.*\)|\$[A-Za-z_]\w*|\{\{.*\}\}|<[^>]*>|%\(.*\)s|%[A-Za-z_]+%|\*+|x{3,}|\.{3}|"""
    r"""(?i:none|null|nil|true|false|yes|no|required|optional|undefined|changeme_in_env|os\.environ.*|"""
    r"""env\(.*\)|getenv.*|process\.env.*|settings\..*|config\..*|self\..*))$"""
)
_PEM_BLOCK = re.compile(
    r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)
_PEM_BODY_LINE = re.compile(r"^\s*[A-Za-z0-9+/]{60,76}={0,2}\s*$")
_AWS_KEY_ID = re.compile(r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}")
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_SECRET_KEYWORD = re.compile(r"(?i)aws.{0,20}secret")
# (kind, a substring every match contains, pattern)
_TOKENS: list[tuple[str, str, re.Pattern[str]]] = [
    ("GitHub Token", "gh", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}")),
    ("GitHub Token", "github_pat_", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}")),
    ("GitLab Token", "glpat-", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    (
        "Slack Webhook",
        "hooks.slack",
        re.compile(r"https://hooks\.slack(?:-gov)?\.com/(?:services|workflows)/[A-Za-z0-9/_+-]+"),
    ),
    ("Slack Token", "xox", re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}")),
    ("API Key", "sk-", re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}")),
    ("AWS Access Key", "A", _AWS_KEY_ID),
]
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^\s:/@]*):(?P<password>[^\s/@]+)@")
# Free text: a run of token characters; "/" and "." end it so paths and URLs are not one token.
_TOKEN_RUN = re.compile(r"[A-Za-z0-9+_-]{20,}")
# A line none of these match cannot hold anything the plugins or detectors find: skip them cheaply.
_PREFILTER = re.compile(
    r"(?i)[A-Za-z0-9+/=_~-]{11,}|"
    + _KEYWORDS
    + r"|://[^\s/]*@|BEGIN|PuTTY|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|"
    r"cloudant|softlayer|ibm|AccountKey"
)


def entropy(value: str) -> float:
    """Shannon entropy in bits per character over the value's own characters."""
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def looks_random(value: str, *, keyword: bool = False) -> bool:
    """An unquoted token that is likely a generated secret rather than a word, path or hash."""
    if len(value) < MIN_ENTROPY_LENGTH:
        return False
    if re.fullmatch(r"[0-9a-fA-F]+", value):
        return keyword and len(value) >= 32  # hashes and commit ids, unless the key says secret
    has_classes = (
        any(c.islower() for c in value)
        and any(c.isupper() for c in value)
        and any(c.isdigit() for c in value)
    )
    return has_classes and entropy(value) >= ENTROPY_BITS


def _is_reference(value: str) -> bool:
    """Not a secret: a reference to one elsewhere, a placeholder, a number or too short to matter."""
    value = value.strip()
    return bool(_REFERENCE.match(value)) or len(value) < MIN_KEYWORD_VALUE or value.isdigit()


def _extra_line_hits(line: str, path: str | None) -> Iterator[tuple[str, str]]:
    """(kind, value) for what detect-secrets misses on one line (cheap substring guards first)."""
    for kind, hint, pattern in _TOKENS:
        if hint in line:
            yield from ((kind, match.group(0)) for match in pattern.finditer(line))
    if "://" in line and "@" in line:
        yield from (("Basic Auth Credentials", m.group("password")) for m in _URL_USERINFO.finditer(line))
    long_run = _LONG_RUN.search(line)
    if long_run is None:
        if is_config_like(path) and _KEYWORD.search(line):
            yield from _keyword_values(line)
        return
    if _AWS_KEY_ID.search(line) or _AWS_SECRET_KEYWORD.search(line):
        for match in _AWS_SECRET.finditer(line):
            if looks_random(match.group(0)) or "/" in match.group(0) or "+" in match.group(0):
                yield "AWS Secret Access Key", match.group(0)
    if _PEM_BODY_LINE.match(line) and entropy(line.strip()) >= BASE64_LIMIT:
        yield "Private Key", line.strip()
    if is_config_like(path):
        if _KEYWORD.search(line):
            yield from _keyword_values(line)
        for match in _ANY_ASSIGNMENT.finditer(line):
            value = match.group("value")
            if looks_random(value, keyword=bool(_KEYWORD.search(match.group("key")))):
                yield "High Entropy String", value
    if path is None:
        for match in _TOKEN_RUN.finditer(line):
            if looks_random(match.group(0)):
                yield "High Entropy String", match.group(0)
        for match in _AWS_SECRET.finditer(line):
            if ("/" in match.group(0) or "+" in match.group(0)) and looks_random(match.group(0)):
                yield "AWS Secret Access Key", match.group(0)


def _keyword_values(line: str) -> Iterator[tuple[str, str]]:
    for match in _ASSIGNMENT.finditer(line):
        value = match.group("quoted") or match.group("value")
        key = match.group("key")
        if _METADATA_KEY.search(key) and not _KEEP_KEY.search(key):
            continue
        if not _is_reference(value) and not heuristic.is_indirect_reference(line):
            yield "Secret Keyword", value


# ---------------------------------------------------------------------------------- detect-secrets


class _ConfigKeywordDetector(KeywordDetector):
    """The KeywordDetector with its config-file rules (unquoted values) for env-like files too."""

    def analyze_line(
        self, filename: str, line: str, line_number: int = 0, context: Any = None, **kwargs: Any
    ) -> Any:
        if is_config_like(filename or None):
            return BasePlugin.analyze_line(
                self,
                filename=filename,
                line=line,
                line_number=line_number,
                context=context,
                denylist_regex_to_group=CONFIG_DENYLIST_REGEX_TO_GROUP,
            )
        return super().analyze_line(filename, line, line_number, context, **kwargs)


@cache
def plugins() -> tuple[BasePlugin, ...]:
    """An instance of every plugin detect-secrets ships, built once (they hold compiled regexes only)."""
    built: list[BasePlugin] = []
    classes: list[type[Any]] = list(get_mapping_from_secret_type_to_class().values())
    for cls in classes:
        if cls is KeywordDetector:
            built.append(_ConfigKeywordDetector())
        elif cls.__name__ == "Base64HighEntropyString":
            built.append(cls(limit=BASE64_LIMIT))
        elif cls.__name__ == "HexHighEntropyString":
            built.append(cls(limit=HEX_LIMIT))
        else:
            built.append(cls())
    return tuple(built)


# detect-secrets' default heuristic filters (not its allowlist pragma, not its "file exists" check).
_SECRET_FILTERS: list[Callable[[str], bool]] = [
    heuristic.is_sequential_string,
    heuristic.is_potential_uuid,
    heuristic.is_templated_secret,
    heuristic.is_prefixed_with_dollar_sign,
    heuristic.is_not_alphanumeric_string,
]


def _filtered(value: str, line: str, plugin: BasePlugin) -> bool:
    if any(check(value) for check in _SECRET_FILTERS):
        return True
    return heuristic.is_likely_id_string(value, line, plugin)


def _plugin_line_hits(line: str, path: str | None) -> Iterator[tuple[str, str]]:
    name = path or ""
    for plugin in plugins():
        for secret in plugin.analyze_line(filename=name, line=line, line_number=0):
            value = secret.secret_value or ""
            # detect-secrets drops the whole line on an indirect reference (`x = f(...)`), which
            # would hide a token in `AWS = dict(key="AKIA...")`; here it only clears keyword hits.
            if isinstance(plugin, KeywordDetector) and (
                _is_reference(value) or heuristic.is_indirect_reference(line)
            ):
                continue  # `secret_source: env`, `password: ${DB_PASSWORD}`: names, not values
            if value and not _filtered(value, line, plugin):
                yield str(secret.type), value


def line_hits(line: str, path: str | None = None) -> list[tuple[str, str]]:
    """(kind, value) of every possible secret on one line; path None means free text."""
    line = line.rstrip("\r\n")
    if not line.strip() or not _PREFILTER.search(line):
        return []
    found: dict[str, set[str]] = {}
    for kind, value in (*_plugin_line_hits(line, path), *_extra_line_hits(line, path)):
        found.setdefault(value, set()).add(kind)
    # A value inside a longer one is the same secret seen by a narrower pattern (detect-secrets'
    # GitHub detector reports only the "ghp" prefix of a token, for one): its kinds go to the longer.
    for value in sorted(found, key=len):
        container = next((other for other in found if other != value and value in other), None)
        if container is not None:
            found[container] |= found.pop(value)
    return [(kind, value) for value, kinds in found.items() for kind in sorted(kinds)]


def _skip_file(path: str) -> bool:
    return heuristic.is_lock_file(path) or heuristic.is_swagger_file(path) or heuristic.is_non_text_file(path)


def scan_lines(lines: Iterable[tuple[int, str]], path: str | None = None) -> list[SecretHit]:
    hits: list[SecretHit] = []
    for number, text in lines:
        hits += [SecretHit(kind, number, value, path) for kind, value in line_hits(text, path)]
    return hits


def scan_diff(diff: str) -> list[SecretHit]:
    """Possible secrets on the added lines of a unified diff (raises on a diff it cannot parse)."""
    hits: list[SecretHit] = []
    for patched in PatchSet.from_string(diff):
        path = patched.path
        if _skip_file(path):
            continue
        added = [(ln.target_line_no or 0, ln.value) for hunk in patched for ln in hunk if ln.is_added]
        hits += scan_lines(added, path)
        hits += _pem_blocks("\n".join(text for _, text in added), path, added)
    return _unique(hits)


def scan_text(text: str) -> list[SecretHit]:
    """Possible secrets in free text (a commit message, output), by line number from 1."""
    hits = scan_lines(enumerate(text.splitlines(), 1))
    for match in _PEM_BLOCK.finditer(text):
        hits.append(SecretHit("Private Key", text.count("\n", 0, match.start()) + 1, match.group(0)))
    return _unique(hits)


def _pem_blocks(text: str, path: str, lines: list[tuple[int, str]]) -> list[SecretHit]:
    hits = []
    for match in _PEM_BLOCK.finditer(text):
        index = text.count("\n", 0, match.start())
        hits.append(SecretHit("Private Key", lines[index][0], match.group(0), path))
    return hits


def _unique(hits: list[SecretHit]) -> list[SecretHit]:
    seen: set[tuple[str | None, int, str, str]] = set()
    out = []
    for hit in hits:
        key = (hit.file, hit.line, hit.value, hit.kind)
        if key not in seen:
            seen.add(key)
            out.append(hit)
    return out


# -------------------------------------------------------------------------------------- masking


def _mask_userinfo(match: re.Match[str]) -> str:
    return f"{match.group('scheme')}{match.group('user')}:{MASK}@"


def redact_text(text: str) -> str:
    """text with every possible secret the scanner finds replaced by MASK."""
    if not text:
        return text
    text = _PEM_BLOCK.sub(MASK, text)
    text = _URL_USERINFO.sub(_mask_userinfo, text)
    if not _PREFILTER.search(text):
        return text
    out = []
    for line in text.split("\n"):
        values = sorted({value for _, value in line_hits(line)}, key=len, reverse=True)
        for value in values:
            if value and value != MASK:
                line = line.replace(value, MASK)
        out.append(line)
    return "\n".join(out)
