"""Rules of the `bundle` section: who may sign the stack's pull-mode bundles (cnctl/bundle).

Each rule yields a `Problem` at the field to change. The schema already refuses a signer identity that
allowed_signers would read as a pattern (`*`, `?`, `,`, spaces, quotes) and a public key line that is not a key
of its type; these rules relate the signers to each other. GOOD / BAD:

| rule                      | GOOD                                              | BAD (field named)                                        |
|---------------------------|---------------------------------------------------|----------------------------------------------------------|
| signer_identities_unique  | release@plant, ops@plant                          | release@plant twice (bundle.signers[1].identity)         |
| signer_keys_distinct      | one key per identity                              | the same key under two identities (bundle.signers[1].publicKey) |
| pull_hosts_have_a_bundle  | `mode: pull` in a stack with bundle.signers       | `mode: pull` and no bundle section (fleets.edge[0].mode)  |
| channel_only_when_pulling | `channel: canary` beside `mode: pull`             | `channel: canary` on a push host (fleets.servers[0].channel) |
| signers_not_placeholders  | the `ssh-keygen -y` line of a key someone holds   | PLACEHOLDER_SIGNER_KEY (bundle.signers[0].publicKey)     |

Why they matter: `ssh-keygen -Y verify -I <identity>` checks the signature against the keys of that
identity, and `find-principals` names every identity of the signing key; a key under two names makes the
identity a bundle reports meaningless, and a name listed twice hides which key was meant.

`signers_not_placeholders` is a placeholder rule (PLACEHOLDER_RULES, `cnctl.config.checks.placeholders`): an
example stack ships the placeholder key so that it plans as shipped, and `cnctl validate`, `cnctl up` and
`pulumi up` refuse it until it is replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from cnctl.catalog import Catalog
from cnctl.config.errors import Problem
from cnctl.config.schema import StackConfig
from cnctl.config.values import repeated

Rule = Callable[[StackConfig, Catalog], Iterator[Problem]]

# The signer an example stack ships until its operator lists their own key: an Ed25519 public key of 32 zero
# bytes, whose private half no one holds, so nothing signed verifies with it (docs/pull-mode.md).
PLACEHOLDER_SIGNER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA REPLACE-ME"


def signer_identities_unique(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    if cfg.bundle is None:
        return
    identities = ((f"bundle.signers[{i}].identity", signer.identity) for i, signer in enumerate(cfg.bundle.signers))
    for path, identity, first, _ in repeated(identities):  # compared as values.canonical_host: case-blind
        yield Problem(path, identity, f"is listed twice (first at {first.removesuffix('.identity')}); give each key its own identity")


def signer_keys_distinct(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    if cfg.bundle is None:
        return
    seen: dict[str, int] = {}
    for i, signer in enumerate(cfg.bundle.signers):
        blob = _key_blob(signer.public_key)
        if blob in seen:
            yield Problem(f"bundle.signers[{i}].publicKey", None,
                          f"is the key of bundle.signers[{seen[blob]}] again; list each key once, under one identity")
        seen.setdefault(blob, i)


def _entries(cfg: StackConfig) -> Iterator[tuple[str, Any]]:
    for group in ("edge", "servers"):
        for i, entry in enumerate(getattr(cfg.fleets, group)):
            yield f"fleets.{group}[{i}]", entry


def pull_hosts_have_a_bundle(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A pull-mode host verifies every bundle against the stack's signers: without them it has nothing to trust."""
    if cfg.bundle is not None:
        return
    for where, entry in _entries(cfg):
        if entry.mode == "pull":
            yield Problem(f"{where}.mode", "pull",
                          "needs the stack's bundle section (bundle.signers: the keys its bundles are signed with); "
                          "add it, or set mode: push")


def channel_only_when_pulling(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A channel on a push host would be ignored: say so rather than let the reader believe it follows one."""
    for where, entry in _entries(cfg):
        if entry.channel is not None and entry.mode != "pull":
            yield Problem(f"{where}.channel", entry.channel,
                          "only a pull-mode host follows a bundle channel: add mode: pull, or remove channel")


def _key_blob(public_key: str) -> str:
    """The key itself (its base64), without its type's name and comment."""
    return public_key.split()[1]


def signers_not_placeholders(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """The placeholder key verifies no signature: with it no bundle can be published, so a pull host never
    changes and a worker group's VMs boot, find no bundle, fail their health check and are recreated forever."""
    if cfg.bundle is None:
        return
    placeholder = _key_blob(PLACEHOLDER_SIGNER_KEY)
    for i, signer in enumerate(cfg.bundle.signers):
        if _key_blob(signer.public_key) == placeholder:
            yield Problem(f"bundle.signers[{i}].publicKey", None,
                          "is the example's placeholder key (REPLACE-ME), which no one can sign with; make your key "
                          "with `ssh-keygen -t ed25519 -f ~/.ssh/cn-release` and put here the line "
                          "`ssh-keygen -y -f ~/.ssh/cn-release` prints")


RULES: tuple[Rule, ...] = (signer_identities_unique, signer_keys_distinct, pull_hosts_have_a_bundle,
                           channel_only_when_pulling)

# Refused only where something would be created from the stack (see the module's docstring).
PLACEHOLDER_RULES: tuple[Rule, ...] = (signers_not_placeholders,)
