"""Rules of the `bundle` section: who may sign the stack's pull-mode bundles (cnctl/bundle).

Each rule yields a `Problem` at the field to change. The schema already refuses a signer identity that
allowed_signers would read as a pattern (`*`, `?`, `,`, spaces, quotes) and a public key line that is not a key
of its type; these rules relate the signers to each other. GOOD / BAD:

| rule                      | GOOD                                              | BAD (field named)                                        |
|---------------------------|---------------------------------------------------|----------------------------------------------------------|
| signer_identities_unique  | release@plant, ops@plant                          | release@plant twice (bundle.signers[1].identity)         |
| signer_keys_distinct      | one key per identity                              | the same key under two identities (bundle.signers[1].publicKey) |

Why they matter: `ssh-keygen -Y verify -I <identity>` checks the signature against the keys of that
identity, and `find-principals` names every identity of the signing key; a key under two names makes the
identity a bundle reports meaningless, and a name listed twice hides which key was meant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from cnctl.catalog import Catalog
from cnctl.config.errors import Problem
from cnctl.config.schema import StackConfig

Rule = Callable[[StackConfig, Catalog], Iterator[Problem]]


def signer_identities_unique(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    if cfg.bundle is None:
        return
    seen: dict[str, int] = {}
    for i, signer in enumerate(cfg.bundle.signers):
        if signer.identity in seen:
            yield Problem(f"bundle.signers[{i}].identity", signer.identity,
                          f"is listed twice (first at bundle.signers[{seen[signer.identity]}]); give each key its own identity")
        seen.setdefault(signer.identity, i)


def signer_keys_distinct(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    if cfg.bundle is None:
        return
    seen: dict[str, int] = {}
    for i, signer in enumerate(cfg.bundle.signers):
        blob = signer.public_key.split()[1]  # the key itself, not its comment
        if blob in seen:
            yield Problem(f"bundle.signers[{i}].publicKey", None,
                          f"is the key of bundle.signers[{seen[blob]}] again; list each key once, under one identity")
        seen.setdefault(blob, i)


RULES: tuple[Rule, ...] = (signer_identities_unique, signer_keys_distinct)
