"""The troubleshooting table, generated from the error tree.

Each row is one exception class of ``securesession._exceptions`` (and, for classes
whose docstring lists the values of a ``reason`` attribute, one row per reason):

* **error** and **is a**: the class and its bases, read from the classes themselves;
* **cause**: the class docstring and its line in the tree drawn in the module
  docstring;
* **fix**: :data:`FIXES` below, the only hand-written part. A class (or reason) without
  a fix, or a fix for a class that no longer exists, is a problem that fails the build.
"""

from __future__ import annotations

import inspect
import re
from types import ModuleType

#: What to do, per class name or (class name, reason). Markdown; relative links are
#: from docs/troubleshooting.md.
FIXES: dict[str | tuple[str, str], str] = {
    "SecureSessionError": (
        "Never raised itself: `except SecureSessionError` catches every error below. "
        "Read the message: it names the entry, field or file, never a secret."
    ),
    "ConfigurationError": (
        "Fix the setting the message names: a registry URL without a known scheme "
        "(`memory://`, `sqlite:///`, `postgresql://`, `vault+https://`, or a plug-in's), "
        "a backend's missing extra (`pip install 'securesession[postgres]'`), an option "
        "given twice, or one `SecureAdapter` mounted on two sessions (give each its own)."
    ),
    "InvalidURLError": (
        "Use an absolute `http(s)://` URL without user info. Dot segments (also "
        "`%2e%2e`), encoded slashes, backslashes and IPv6 zone ids are refused on purpose "
        "([why](injection.md#urls-that-are-refused)): send the path the server should see."
    ),
    "InvalidEntryError": (
        "Fix the field the message names: only one credential may write "
        "`Authorization` (`basic`, `bearer`, `digest`, `ntlm`); header values must be "
        "printable Latin-1 without CR/LF; a user name for Basic cannot contain `:`; "
        "a TLS profile needs an `https://` URL. See [Entries](concepts.md#entries)."
    ),
    "MasterKeyError": (
        "Point at the right key: `--key-file`, `SECURESESSION_KEY_FILE` or "
        "`SECURESESSION_MASTER_KEY` ([CLI configuration](cli.md#configuration)). "
        "`chmod 600` a key file that group or others can read; a key is 32 bytes, "
        "base64url in the environment; install `securesession[keyring]` for the OS keyring."
    ),
    "TLSConfigError": (
        "Fix the profile field the message names: the PKCS#12 or key password, a key "
        "that does not match its certificate, TLS 1.0/1.1 without `allow_legacy=True`, "
        '`ca_bundle="system"` without `securesession[truststore]`, or another adapter '
        "mounted for a URL whose entry has a profile. "
        "[Every message](mutual-tls.md#troubleshooting)."
    ),
    "ClientCertificateExpiredError": (
        "Store a renewed certificate in the entry (`securesession add --replace ... "
        "--client-pkcs12 new.pfx`), and check this machine's clock. "
        "[How](how-to/mutual-tls-from-pfx.md)."
    ),
    "DecryptionError": (
        '"wrong master key": the message names the registry\'s key id and yours; use '
        "the key the registry was last rotated to (after an interrupted `rotate-key`, "
        "`master.key.new`: [Rotate keys](how-to/rotate-keys.md)). Any other message: "
        "the named entry or field was tampered with or moved in the store; restore it "
        "from a backup or `put` it again. Nothing was sent."
    ),
    "RegistryError": (
        "The store failed (I/O, lock, connection) or refused (a PostgreSQL reader role "
        "writing: `permission denied`). Fix the store; by default a session fails "
        "closed. `SecureSession(registry, stale_on_error=N)` rides out short outages "
        "([PostgreSQL](deployment.md#when-the-database-is-unreachable))."
    ),
    "RegistryCorruptError": (
        "The store holds data securesession did not write: an entry edited, trimmed or "
        "moved outside securesession, or a damaged file. Restore the entry (or the "
        "store) from a backup, or `put` the entry again "
        "([what is checked](security.md#what-is-stored-and-how))."
    ),
    "LegacyEntryError": (
        "The entry was written by securesession 0.1.0 (or made to look so): its settings "
        "are not authenticated, so it is refused and nothing goes to its URL. If the "
        "registry really comes from 0.1.0, check the entry (`securesession show URL`) "
        "and run `securesession upgrade`; meanwhile `open_registry(..., "
        'legacy_entries="accept")` reads it. An entry without any secret field is '
        "refused always: `securesession remove` it and put it again "
        "([legacy entries](security.md#legacy-entries-written-by-securesession-010))."
    ),
    "SchemaVersionError": (
        "A newer securesession wrote this registry; it is left untouched. Upgrade "
        "securesession on this host (every host sharing the registry runs the same or "
        "a newer version)."
    ),
    "ConflictError": (
        "Another writer changed the entries the message names since you read them, and "
        "nothing was written. Read them again and retry (`securesession sync` plans "
        "afresh; `--force` overwrites). [Registry.apply](concepts.md#writing-a-backend)."
    ),
    "AuditError": (
        "The audit log was edited, cut or replaced outside securesession, or the registry "
        "changed without its record: the message names the first record at fault. Treat "
        "it as an incident; compare with a backup and with the head you kept "
        "([Verify the audit log](operations.md#verify-the-audit-log))."
    ),
    "VaultError": (
        "See the row for its `reason` below; the message names the address and the path. "
        "[Vault/OpenBao](vault.md#when-the-engine-is-unavailable)."
    ),
    ("VaultError", "sealed"): "Unseal the engine (`bao operator unseal`).",
    ("VaultError", "network"): (
        "Check the address and that the engine is up and reachable from here; an "
        "untrusted TLS certificate says so in the message: give its CA "
        "(`VaultConnection(verify=...)`, `?ca=` in the URL, or `VAULT_CACERT`)."
    ),
    ("VaultError", "forbidden"): (
        "Grant the capability the message names on the path it names in the token's "
        "policy ([policies](vault.md#policies))."
    ),
    ("VaultError", "token"): (
        "Give valid credentials: `VAULT_TOKEN`, an AppRole (`VAULT_ROLE_ID` + "
        "`VAULT_SECRET_ID`), or a token file; renew or re-issue an expired secret id."
    ),
    ("VaultError", "conflict"): (
        "Too many writers at once on one registry prefix: retry, and spread writers "
        "over time or over several prefixes."
    ),
    ("VaultError", "error"): (
        "Any other failure: the message carries the engine's answer; see its logs."
    ),
    "NoCredentialsError": (
        "The session is `strict=True` and the URL (or a redirect hop) has no entry: add "
        "one ([Add a service](how-to/add-a-service.md)); `securesession match URL` shows "
        "the near misses. After an https → http redirect nothing is injected, by design."
    ),
    "TLSHandshakeError": (
        "Run `securesession check URL`: it does the entry's handshake and explains it. "
        "A port that speaks plain HTTP: use `http://` or the TLS port. "
        "[Every message](mutual-tls.md#troubleshooting)."
    ),
    "ClientCertificateRequiredError": (
        "Add the client certificate to the entry's profile "
        "([Mutual TLS from a .pfx](how-to/mutual-tls-from-pfx.md))."
    ),
    "ClientCertificateRejectedError": "See the row for its `reason` below.",
    ("ClientCertificateRejectedError", "unknown_ca"): (
        "Ask which CA the service accepts, and have it trust the CA that issued ours."
    ),
    ("ClientCertificateRejectedError", "revoked"): (
        "Have a new certificate issued and store it in the entry."
    ),
    ("ClientCertificateRejectedError", "expired"): (
        "Renew the certificate, or have the server's clock checked."
    ),
    ("ClientCertificateRejectedError", "refused"): (
        "The server gave no reason: compare what `securesession check URL` says the "
        "entry presented with what the service expects."
    ),
    "ProtocolVersionMismatchError": (
        "Widen `version` / `min_version` / `max_version` to a version the server accepts "
        "(the message names both sides; 1.0/1.1 also need `allow_legacy=True`), or have "
        "the server enable TLS 1.2."
    ),
    "ServerCertificateError": (
        "Untrusted: add the gateway's CA (and intermediates) to the entry's `ca_bundle`. "
        "Wrong host: use the host name the certificate names. Expired or revoked: the "
        "service must replace it; never work around it."
    ),
    "PinMismatchError": (
        "If the service changed its key on purpose, add the new pin (the message shows "
        "it; `securesession check URL` prints it) beside the old one; otherwise suspect "
        "interception. Nothing was sent."
    ),
}

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|exc|data):`~?(?:[\w.]+\.)?([\w]+)`")


def _module() -> ModuleType:
    from securesession import _exceptions

    return _exceptions


def classes() -> list[type[BaseException]]:
    """The classes of the error tree, in the order the module defines them."""
    module = _module()
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, module.SecureSessionError)
        and obj.__module__ == module.__name__
    ]
    return sorted(found, key=lambda cls: inspect.getsourcelines(cls)[1])


def tree() -> str:
    """The tree drawn in the module docstring (the lines from ``SecureSessionError``)."""
    doc = inspect.getdoc(_module()) or ""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "SecureSessionError")
    end = start
    while end < len(lines) and lines[end].strip():
        end += 1
    return "\n".join(line.removeprefix("    ") for line in lines[start:end])


def _markdown(text: str) -> str:
    text = re.sub(r":mod:`~?([\w.]+)`", r"`\1`", text)
    text = _ROLE.sub(r"`\1`", text)
    return " ".join(text.split()).replace("|", "\\|")


def reasons(cls: type[BaseException]) -> list[str]:
    """The ``reason`` values a class's docstring lists, in order."""
    doc = inspect.getdoc(cls) or ""
    if ":attr:`reason`" not in doc:
        return []
    quoted = re.findall(r'``"(\w+)"``', doc)
    return list(dict.fromkeys(quoted))


def problems() -> list[str]:
    """Classes or reasons without a fix, and fixes for things that do not exist."""
    found: list[str] = []
    wanted: set[str | tuple[str, str]] = set()
    for cls in classes():
        wanted.add(cls.__name__)
        wanted.update((cls.__name__, reason) for reason in reasons(cls))
    for key in sorted(wanted - set(FIXES), key=str):
        found.append(f"troubleshooting: no fix written for {key!r} (docs/_gen/troubleshooting.py)")
    for key in sorted(set(FIXES) - wanted, key=str):
        found.append(f"troubleshooting: a fix for {key!r}, which the error tree does not have")
    return found


def _branch(cls: type[BaseException]) -> type[BaseException]:
    """The top-level branch of the tree *cls* is in (a direct subclass of the base)."""
    base = _module().SecureSessionError
    for ancestor in cls.__mro__:
        if base in ancestor.__bases__:
            return ancestor
    return cls


def _tree_note(name: str) -> str:
    """What the tree says next to *name*, continuation lines included."""
    lines = tree().splitlines()
    for i, line in enumerate(lines):
        match = re.match(rf"^[\s│├└─]*{name}\s+(?P<note>\S.*)$", line)
        if match:
            parts = [match["note"]]
            for following in lines[i + 1 :]:
                text = following.strip(" │")
                if not text or text[0] in "├└" or re.match(r"[A-Z]\w+Error\b", text):
                    break
                parts.append(text)
            return " ".join(parts)
    return ""


def render() -> str:
    """The tree, then one table per branch of it, as Markdown."""
    module = _module()
    plain_tree = _ROLE.sub(lambda m: m.group(0).split("`")[1].lstrip("~"), tree())
    lines = ["```text", plain_tree, "```", ""]
    base = module.SecureSessionError
    lines += [f"[`{base.__name__}`][securesession.{base.__name__}]: {FIXES[base.__name__]}", ""]
    current = None
    for cls in classes():
        if cls is base:
            continue
        branch = _branch(cls)
        if branch is not current:
            current = branch
            note = _markdown(_tree_note(branch.__name__))
            lines += ["", f"## {branch.__name__}", ""]
            if note:
                lines += [note[0].upper() + note[1:] + ".", ""]
            lines += ["| error | cause | fix |", "|---|---|---|"]
        name = cls.__name__
        bases = ", ".join(f"`{b.__name__}`" for b in cls.__bases__ if b is not Exception)
        paragraphs = (inspect.getdoc(cls) or "").split("\n\n")
        # With reason rows below, the paragraph that lists the reasons is theirs.
        cause = _markdown(paragraphs[0] if reasons(cls) else " ".join(paragraphs))
        error = f"[`{name}`][securesession.{name}]<br>a {bases}"
        lines.append(f"| {error} | {cause} | {FIXES.get(name, '')} |")
        for reason in reasons(cls):
            lines.append(
                f'| `{name}`<br>`reason="{reason}"` | '
                f"{_reason_cause(cls, reason)} | {FIXES.get((name, reason), '')} |"
            )
    return "\n".join(lines) + "\n"


def _reason_cause(cls: type[BaseException], reason: str) -> str:
    doc = " ".join((inspect.getdoc(cls) or "").split())
    summary = _markdown(doc.split(". ", 1)[0].rstrip("."))
    match = re.search(rf'``"{reason}"``\s*(\(([^)]*)\))?', doc)
    if match and match.group(2):
        return f"{summary}: {_markdown(match.group(2))}"
    return f"{summary}: {reason}"


if __name__ == "__main__":
    print(render())
    for problem in problems():
        print("PROBLEM:", problem)
