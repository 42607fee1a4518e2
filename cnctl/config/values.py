"""The kinds of value a stack file holds: one type per meaning, each the narrowest its use allows.

A stack is written by people and by CI from pull requests, so every value here is parsed, never trusted:
an address is an address (no zone id but an interface's name, no IPv4-mapped form), a URL is an RFC 3986 URL
with no credentials or template syntax, an SSH key is a key, a name has an explicit character set. No string
anywhere holds a control character (`control_characters_in`, applied to every field by `schema.Section`). Rules that relate
several fields, or a value and the catalog, live in `checks.py`. docs/stack-values.md lists the kinds.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated

from pydantic import AfterValidator, Field

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# --- one line of printable text: the rule every string of the schema obeys -------------------------------------

# Unicode categories no stack value may hold: control characters (C0, DEL, C1), format characters (the bidi
# embeddings, overrides and isolates, zero-width characters, the BOM), line and paragraph separators, surrogates.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_CONTROL_NAMES = {"\n": "newline", "\r": "carriage return", "\t": "tab", "\x00": "NUL", "\x1b": "ESC", "\x7f": "DEL"}


def control_character(text: str) -> str | None:
    """The first character of `text` that no stack value may hold, or None."""
    return next((ch for ch in text if unicodedata.category(ch) in _CONTROL_CATEGORIES), None)


def describe_character(ch: str) -> str:
    """`U+000A (newline)`, `U+202E (RIGHT-TO-LEFT OVERRIDE)`: a character named without printing it."""
    name = _CONTROL_NAMES.get(ch) or unicodedata.name(ch, "control character")
    return f"U+{ord(ch):04X} ({name})"


def control_characters_in(value: object, *, into_containers: bool = True) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """(where below `value`, the string, its first forbidden character) for every string in `value` that holds
    one: `value` itself, list items, dict keys and values. `into_containers` False: `value` itself only (its
    lists and mappings are models' input, which check their own fields)."""
    if isinstance(value, str):
        found = control_character(value)
        if found is not None:
            yield (), value, found
    elif into_containers and isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            for where, text, ch in control_characters_in(item):
                yield (index, *where), text, ch
    elif into_containers and isinstance(value, dict):
        for key, item in value.items():
            for where, text, ch in (*control_characters_in(key), *control_characters_in(item)):
                yield (str(key), *where), text, ch


ONE_LINE_RULE = "no stack value holds line breaks, tabs, escapes or bidi controls: remove it"

# --- addresses ---------------------------------------------------------------------------------------------------

_ZONE_ID = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")


def parse_ip(value: str, *, zone_ok: bool = False) -> IP:
    """An IP address literal, refused when Python's `ipaddress` would read more into it than an address.

    `ipaddress` accepts an IPv6 zone id of any text but `%` and `/` (`::1%$(reboot)`); here a zone id is
    allowed only where `zone_ok`, only on a link-local IPv6 address, and only of interface-name characters. An
    IPv4-mapped IPv6 address (`::ffff:10.50.1.21`) is the IPv4 host in disguise: written as IPv4 instead.
    Raises ValueError with the rule and the fix.
    """
    text, pct, zone = value.partition("%")
    address = ipaddress.ip_address(text)  # ValueError: not an address at all
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise ValueError(f"is an IPv4-mapped IPv6 address; write the IPv4 form {address.ipv4_mapped}")
    if not pct:
        return address
    if not zone_ok:
        raise ValueError("has a zone id (%...); write the address without it")
    if not _ZONE_ID.fullmatch(zone):
        raise ValueError("has a zone id that is not an interface name (1-15 of letters, digits, _ . -); write the "
                         "interface the address is reached through, like fe80::1%eth0")
    if not isinstance(address, ipaddress.IPv6Address) or address not in LINK_LOCAL_V6:
        raise ValueError("has a zone id, which only a link-local address (fe80::/10) takes; drop the %...")
    return ipaddress.ip_address(value)


def is_dns_name(value: str) -> bool:
    """A DNS name of letters, digits and hyphens (an optional trailing dot): never a mistyped IP address."""
    labels = value.removesuffix(".").split(".")
    # an all-digit last label is a mistyped IP address (999.1.1.1), never a DNS name
    return len(value) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def canonical_host(value: str) -> str:
    """The one spelling of a host, for comparing: an IP address in `ipaddress`'s canonical form (an IPv4-mapped
    IPv6 address as its IPv4 form, a zone id kept as written: interface names are case-sensitive), anything else
    (DNS names, host names) lower-case without a trailing dot. `10.50.1.21`, `::ffff:10.50.1.21` and
    `ORIN-1.plant.example.` vs `orin-1.plant.example` are each one host."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return value.lower().removesuffix(".")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _is_ip(value: str) -> bool:
    """Is `value` an IP address, but for what may follow a `%` (parse_ip judges that)?"""
    try:
        ipaddress.ip_address(value.partition("%")[0])
    except ValueError:
        return False
    return True


def repeated(entries: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str, str, str]]:
    """(path, value, the path it first appeared at, as written there) for each value whose canonical form
    (`canonical_host`) an earlier entry already had: the one duplicate finder of the stack's rules."""
    seen: dict[str, tuple[str, str]] = {}
    for path, value in entries:
        key = canonical_host(value)
        if key in seen:
            yield path, value, *seen[key]
        else:
            seen[key] = (path, value)


def _host_address(value: str) -> str:
    """An IP address (a link-local IPv6 one with its interface zone, like fe80::1%eth0) or a DNS name."""
    if is_dns_name(value):
        return value
    if not _is_ip(value):
        raise ValueError("is not an IP address or DNS name (letters, digits, - and dots; no templates)")
    parse_ip(value, zone_ok=True)  # its ValueError names what is wrong with this address
    return value


def _ip_address(value: str) -> str:
    if not _is_ip(value):
        raise ValueError("is not an IP address (like 127.0.0.1, 10.0.0.5 or fd00::5)")
    parse_ip(value)
    return value


def _cidr(value: str) -> str:
    """A network in strict form (no host bits), without a zone id or an IPv4-mapped IPv6 range."""
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"is not a CIDR block like 10.20.0.0/24 ({exc})") from None
    if "%" in value:
        raise ValueError("has a zone id (%...); a network has none: write it like fd00::/64")
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
        raise ValueError("is an IPv4-mapped IPv6 range; write the IPv4 form (like 10.40.0.0/16)")
    return value


# --- URLs (RFC 3986), one parser for every kind --------------------------------------------------------------------

# Every character RFC 3986 lets a URI hold: unreserved, reserved (gen-delims and sub-delims) and `%`.
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_URL = re.compile(r"(?P<scheme>[^:/?#]+)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)(?:\?(?P<query>[^#]*))?(?:#(?P<fragment>.*))?")
_TEMPLATE = ("{{", "}}", "{%", "%}", "{#", "#}", "${", "$(", "`")
_PCT = re.compile(r"%(?P<hex>[0-9A-Fa-f]{2})?")
_PORT = re.compile(r"[0-9]{1,5}")


def template_syntax(value: str) -> str | None:
    """The first template or command-substitution marker in `value` (Jinja's, the shell's), or None."""
    return next((marker for marker in _TEMPLATE if marker in value), None)


def _url_host(host: str, scheme: str) -> None:
    """The authority's host: an IP literal (`[v6]`, `[fe80::1%25eth0]` per RFC 6874), IPv4, or a DNS name
    (for gs://, a bucket name)."""
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("has an unclosed [IPv6] host")
        literal = host[1:-1]
        address, pct, zone = literal.partition("%25")
        if "%" in address or (pct and "%" in zone):
            raise ValueError("has a zone id written with a bare % (RFC 6874 writes it %25, like [fe80::1%25eth0])")
        if not _is_ip(address):
            raise ValueError(f"has no valid host ([{literal}] is not an IPv6 address)")
        if parse_ip(f"{address}%{zone}" if pct else address, zone_ok=True).version != 6:
            raise ValueError("has an IPv4 address in brackets; write it without [ ]")
        return
    if scheme == "gs":
        _bucket_name(host)
    elif _is_ip(host):
        if parse_ip(host).version == 6:
            raise ValueError("has an IPv6 host without brackets; write it like [fd00::5]")
    elif not is_dns_name(host):
        raise ValueError(f"has no valid host ({host!r}: letters, digits, - and dots, or an IP address)")


def parse_url(value: str, schemes: tuple[str, ...], *, query: bool = False) -> None:
    """A URL per RFC 3986, strictly: one of `schemes` (lower-case), `//` and a host, an optional port
    (1-65535), a path; a query only where `query`; never a fragment, credentials (`user:pass@`), whitespace,
    control characters, characters a URL must percent-encode, percent-encoded control characters, or template
    syntax (`{{ }}`, `{% %}`, `${`, `$(`, backquotes). Raises ValueError with the rule and the fix."""
    example = f"{schemes[0]}://host/path"
    marker = template_syntax(value)
    if marker is not None:
        raise ValueError(f"holds template or shell syntax ({marker}); a URL here is data: write it out, like {example}")
    bad = next((ch for ch in value if not _URI_CHARS.fullmatch(ch)), None)
    if bad is not None:
        raise ValueError(f"holds {bad!r}, which a URL (RFC 3986) never holds raw; percent-encode it or remove it")
    for escape in _PCT.finditer(value):
        code = escape.group("hex")
        if code is None:
            raise ValueError("has a % that starts no %XX escape; write a literal % as %25")
        if int(code, 16) < 0x20 or int(code, 16) == 0x7F:
            raise ValueError(f"percent-encodes a control character (%{code}); remove it")
    parts = _URL.fullmatch(value)
    if parts is None or parts["scheme"] not in schemes:
        raise ValueError(f"is not a URL like {example} (schemes: {', '.join(schemes)})")
    if "@" in parts["authority"]:
        raise ValueError("carries credentials (user@ or user:password@); a stack file is committed: keep them out "
                         "of it (the service's own credentials file, or a credential-free URL)")
    if parts["fragment"] is not None:
        raise ValueError("has a #fragment, which means nothing here; remove it")
    if parts["query"] is not None and not query:
        raise ValueError("has a ?query, which this URL may not hold; remove it")
    if any(ch in (parts["path"] + (parts["query"] or "")) for ch in "[]"):
        raise ValueError("holds [ or ] outside an [IPv6] host; percent-encode them")
    host, port = _split_port(parts["authority"])
    if not host:
        raise ValueError(f"has no host; write it like {example}")
    _url_host(host, parts["scheme"])
    if port is not None and (not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535):
        raise ValueError(f"has an invalid port ({port!r}); a port is 1-65535")


def _split_port(authority: str) -> tuple[str, str | None]:
    """`host:port` -> (host, port); `[v6]:port` keeps the brackets; no port -> None."""
    if authority.startswith("["):
        host, _, rest = authority.partition("]")
        host += "]"
        if not rest:
            return host, None
        if not rest.startswith(":"):
            return authority, None  # `[v6]junk`: the host check refuses it
        return host, rest[1:]
    host, colon, port = authority.partition(":")
    return host, (port if colon else None)


def _url(what: str, *schemes: str, query: bool = False) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            parse_url(value, schemes, query=query)
        except ValueError as exc:
            detail = str(exc).removeprefix("is not a URL like ")
            raise ValueError(f"is not a valid {what}: " + (f"write it like {detail}" if detail != str(exc) else f"it {detail}")) from None
        return value

    return check


# --- names ---------------------------------------------------------------------------------------------------------

_BUCKET_CHARS = re.compile(r"[a-z0-9._-]+")
# "close misspellings such as g00gle" are refused too: read digits as the letters they imitate
_DIGIT_LOOKALIKES = str.maketrans("013", "ole")


def _matches(pattern: str, what: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"is not a valid {what}")
        return value

    return check


def _bucket_name(value: str) -> str:
    """Cloud Storage's naming rules (cloud.google.com/storage/docs/buckets#naming), all of them."""
    dotted = "." in value
    if not _BUCKET_CHARS.fullmatch(value) or not value[0].isalnum() or not value[-1].isalnum():
        raise ValueError("is not a valid bucket name (a-z 0-9 . _ -, starting and ending with a letter or digit)")
    if not 3 <= len(value) <= (222 if dotted else 63):
        raise ValueError(f"is not a valid bucket name: 3-63 characters (222 with dots), not {len(value)}")
    if dotted and any(not 1 <= len(part) <= 63 or part[0] == "-" or part[-1] == "-" for part in value.split(".")):
        raise ValueError("is not a valid bucket name: each dot-separated part is 1-63 characters, no - at its ends")
    look_alike = value.translate(_DIGIT_LOOKALIKES)
    if look_alike.startswith("goog") or "google" in look_alike:
        raise ValueError("is not allowed: bucket names may not start with 'goog' or contain 'google' (or look-alikes)")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return value
    raise ValueError("is not allowed: a bucket name may not be an IP address")


_SAFE_PATH = re.compile(r"[A-Za-z0-9/._-]+")


def _directory(value: str) -> str:
    """An absolute path a deploy can quote nowhere and still be safe: no shell metacharacters, no `..`."""
    if not value.startswith("/") or not _SAFE_PATH.fullmatch(value) or ".." in value.split("/"):
        raise ValueError("is not an absolute directory of letters, digits, / . _ - (no .. or shell characters)")
    return value


def _controller_path(value: str) -> str:
    """A file on the deploying machine: absolute or ~/..., never inside a committed directory by accident."""
    relative = value.removeprefix("~")
    if not value.startswith(("/", "~/")) or not _SAFE_PATH.fullmatch(relative) or ".." in relative.split("/"):
        raise ValueError("is not an absolute path or ~/path of letters, digits, / . _ - on the deploying machine (no ..)")
    return value


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key, val in value.items():
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key):
            raise ValueError(f"label key {key!r} must be lowercase letters, digits, _ or -, starting with a letter")
        if not re.fullmatch(r"[a-z0-9_-]{0,63}", val):
            raise ValueError(f"label value {val!r} (key {key!r}) must be lowercase letters, digits, _ or -")
    return value


# --- SSH public keys ----------------------------------------------------------------------------------------------

# The fields of each key type's wire blob after its name (RFC 4253 6.6, RFC 5656 3.1, RFC 8709 4, OpenSSH's
# PROTOCOL.u2f): (field count, a check of those fields).
_ECDSA_POINT = {"nistp256": 65, "nistp384": 97, "nistp521": 133}


def _ed25519(fields: list[bytes]) -> bool:
    return len(fields[0]) == 32


def _ecdsa(curve: str) -> Callable[[list[bytes]], bool]:
    return lambda fields: fields[0] == curve.encode() and len(fields[1]) == _ECDSA_POINT[curve] and fields[1][:1] == b"\x04"


def _rsa(fields: list[bytes]) -> bool:
    exponent, modulus = (int.from_bytes(f, "big") for f in fields)
    return exponent >= 3 and modulus.bit_length() >= 2048


_SSH_KEY_TYPES: dict[str, tuple[int, Callable[[list[bytes]], bool]]] = {
    "ssh-ed25519": (1, _ed25519),
    "sk-ssh-ed25519@openssh.com": (2, _ed25519),  # + the FIDO application
    "ecdsa-sha2-nistp256": (2, _ecdsa("nistp256")),
    "ecdsa-sha2-nistp384": (2, _ecdsa("nistp384")),
    "ecdsa-sha2-nistp521": (2, _ecdsa("nistp521")),
    "sk-ecdsa-sha2-nistp256@openssh.com": (3, _ecdsa("nistp256")),
    "ssh-rsa": (2, _rsa),  # at least 2048 bits
}
_SSH_COMMENT = re.compile(r"[A-Za-z0-9@._+=:/-]+( [A-Za-z0-9@._+=:/-]+)*")
_SSH_COMMENT_MAX = 128
_PASTE = "paste the output of `ssh-keygen -y -f <key>`"


def _ssh_fields(blob: bytes) -> list[bytes] | None:
    """The length-prefixed strings of an SSH wire blob, or None if the blob is not a sequence of them."""
    fields: list[bytes] = []
    offset = 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            return None
        size = int.from_bytes(blob[offset : offset + 4], "big")
        offset += 4
        if offset + size > len(blob):
            return None
        fields.append(blob[offset : offset + size])
        offset += size
    return fields


def _ssh_public_key(value: str) -> str:
    """One OpenSSH public key line `<type> <base64> [comment]` (what `ssh-keygen -y -f KEY` prints): a known
    type, a base64 blob that decodes to a whole key of that type, and at most a short one-line comment of
    letters, digits and `@ . _ + = : / -` (the line lands in allowed_signers files and startup scripts)."""
    line = value.strip(" ")
    kind, _, rest = line.partition(" ")
    blob_text, _, comment = rest.partition(" ")
    if kind not in _SSH_KEY_TYPES or not blob_text:
        raise ValueError(f"is not an OpenSSH public key line '<type> <base64> [comment]' (types: "
                         f"{', '.join(_SSH_KEY_TYPES)}); {_PASTE}")
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except ValueError:
        raise ValueError(f"has a damaged {kind} base64 blob; {_PASTE} again") from None
    fields = _ssh_fields(blob)
    count, fits = _SSH_KEY_TYPES[kind]
    if not fields or fields[0] != kind.encode():
        raise ValueError(f"has a base64 blob that is not a {kind} key; {_PASTE} again")
    if len(fields) != 1 + count or not fits(fields[1:]):
        weak = " (RSA keys: at least 2048 bits)" if kind == "ssh-rsa" else ""
        raise ValueError(f"has a base64 blob that is not a whole {kind} key{weak}; {_PASTE} again")
    if comment and (len(comment) > _SSH_COMMENT_MAX or not _SSH_COMMENT.fullmatch(comment)):
        raise ValueError(f"has a comment that is not one short line of letters, digits, spaces and @ . _ + = : / - "
                         f"(at most {_SSH_COMMENT_MAX}); shorten it (like release@plant) or drop it")
    return line


# --- the types -----------------------------------------------------------------------------------------------------

ProjectId = Annotated[str, AfterValidator(_matches(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", "GCP project id (6-30 of a-z 0-9 -)"))]
Region = Annotated[str, AfterValidator(_matches(r"[a-z]+-[a-z]+[0-9]+", "GCP region like us-central1"))]
Zone = Annotated[str, AfterValidator(_matches(r"[a-z]+-[a-z]+[0-9]+-[a-z]", "GCP zone like us-central1-a"))]
# A Cloud Storage location: a region (US-CENTRAL1), a dual-region (NAM4) or a multi-region (EU); which exist is
# catalog data (cnctl/catalog/gcp.yaml `storage_locations`), checked by checks.storage_location_exists.
StorageLocation = Annotated[
    str, AfterValidator(_matches(r"[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*", "Cloud Storage location like US-CENTRAL1, NAM4 or EU"))
]
BucketName = Annotated[str, AfterValidator(_bucket_name)]
BigQueryId = Annotated[str, AfterValidator(_matches(r"[A-Za-z0-9_]{1,1024}", "BigQuery id (letters, digits and _)"))]
Sha256 = Annotated[str, AfterValidator(_matches(r"[0-9a-f]{64}", "sha256 (64 lowercase hex digits)"))]
Cidr = Annotated[str, AfterValidator(_cidr)]
IpAddress = Annotated[str, AfterValidator(_ip_address)]
Labels = Annotated[dict[str, str], AfterValidator(_labels)]
HostName = Annotated[str, AfterValidator(_matches(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", "host name (a-z 0-9 -, at most 63)"))]
ImageRef = Annotated[
    str, AfterValidator(_matches(r"[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+:[A-Za-z0-9._-]+", "container image reference registry/repo:tag"))
]
Port = Annotated[int, Field(ge=1, le=65535)]
KmsKeyName = Annotated[str, AfterValidator(_matches(
    r"projects/[a-z0-9-]+/locations/[a-z0-9-]+/keyRings/[A-Za-z0-9_-]+/cryptoKeys/[A-Za-z0-9_-]+",
    "Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K)",
))]
# Compute Engine names (RFC 1035 labels): which exist is catalog data, checked by the rules of checks.py.
MachineType = Annotated[
    str, AfterValidator(_matches(r"[a-z][a-z0-9]*(-[a-z0-9]+)+", "machine type like n1-standard-8 (a-z 0-9 -)"))
]
GceName = r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
ImageFamily = Annotated[str, AfterValidator(_matches(GceName, "image family like common-cu124-ubuntu-2204-nvidia-550 (a-z 0-9 -)"))]
GpuType = Annotated[str, AfterValidator(_matches(GceName, "GPU type like nvidia-tesla-t4 or nvidia-l4 (a-z 0-9 -)"))]
# A key of the model or pipeline catalog (cnctl/catalog/*.yaml): letters, digits and _ (no dot, no path).
CatalogKey = Annotated[str, AfterValidator(_matches(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", "catalog key (letters, digits, _ and -)"))]
JetPackVersion = Annotated[str, AfterValidator(_matches(r"[0-9]{1,2}\.[0-9]{1,2}(\.[0-9]{1,2})?", "JetPack version like \"6.2\""))]
DriverBranch = Annotated[str, AfterValidator(_matches(r"[0-9]{3,4}", "driver branch like \"550\" (3-4 digits)"))]
# The URL kinds: every one through parse_url (RFC 3986, no credentials, no template syntax).
EndpointUrl = Annotated[str, AfterValidator(_url("endpoint URL", "https", "http"))]
ArchiveUrl = Annotated[str, AfterValidator(_url("archive URL", "https", "http", "gs", query=True))]
RtspUrl = Annotated[str, AfterValidator(_url("camera stream URL", "rtsp", "rtsps", query=True))]
MirrorUrl = Annotated[str, AfterValidator(_url("mirror URL", "https", "http"))]  # a base URL: paths are appended
HostAddress = Annotated[str, AfterValidator(_host_address)]
Directory = Annotated[str, AfterValidator(_directory)]
DevicePath = Annotated[str, AfterValidator(_matches(r"/dev/[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", "device path like /dev/video0"))]
# A Pub/Sub subscription: its id (3-255 chars, a letter first), or its full path in another project.
SubscriptionName = Annotated[str, AfterValidator(_matches(
    r"(projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/subscriptions/)?[A-Za-z][A-Za-z0-9._~+%-]{2,254}",
    "Pub/Sub subscription id, or projects/P/subscriptions/S",
))]
ControllerPath = Annotated[str, AfterValidator(_controller_path)]
# A network interface by name (ens4, eth0, enp3s0.100, wg0): what `ip link` shows, at most 15 characters.
InterfaceName = Annotated[str, AfterValidator(_matches(r"[a-z][a-z0-9.-]{0,14}", "interface name like ens4 (a-z 0-9 . -, at most 15)"))]
# An allowed_signers principal (ssh-keygen(1) ALLOWED SIGNERS): no wildcard, comma, quote or space, which that
# file would read as patterns or separators.
SignerIdentity = Annotated[str, AfterValidator(_matches(
    r"[A-Za-z0-9][A-Za-z0-9@._+-]{0,127}", "signer identity (letters, digits and @ . _ + -, e.g. release@plant)"
))]
SshPublicKey = Annotated[str, AfterValidator(_ssh_public_key)]
# Where alerts go: a plain mailbox address (no display name, comment, quote or space), as Cloud Monitoring's
# e-mail channel takes it.
EmailAddress = Annotated[str, AfterValidator(_matches(
    r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+",
    "e-mail address like ops@plant.example",
))]
