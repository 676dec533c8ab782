"""The inventory's resolving pass: what its checked ``auth`` and ``tls`` entries stand for.

The schema walk (`collector.config.inventory`) checks the file and leaves each project's
credentials and CA bundle as a spec; this pass, run once the whole file is right, turns the
specs into a credentials provider and an `ssl.SSLContext`. It is the part with side effects:
it reads the environment (`environ`) and files (tokens, passwords, CA bundles), and is the
one place the inventory's credentials are read (`collector.auth.provider_from_spec`, which
sends nothing). One provider serves every project with the same entry, one context every
project with the same bundle; every way of not getting one is an `InventoryError` on the
line that named it.
"""

from __future__ import annotations

import ssl as ssl_
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from collector.auth import Credentials, CredentialsUnavailable, provider_from_spec
from collector.auth.chain import SCALAR_KINDS
from collector.config.yamlnodes import NodeReader, join

__all__ = ["AuthSpec", "Resolver", "TlsSpec"]


@dataclass(frozen=True, slots=True)
class AuthSpec:
    """An auth entry, checked but not yet turned into credentials."""

    kind: str  # a kind of `collector.auth.chain.OPTIONS`
    options: tuple[tuple[str, str], ...]  # for provider_from_spec; paths resolved already
    key: str  # "projects[1].auth.aksk"
    node: yaml.Node  # where a problem with the entry as a whole points
    option_keys: Mapping[str, yaml.Node] = field(hash=False, compare=False)  # each option's key

    def where(self, option: str | None) -> tuple[str, yaml.Node]:
        """The key path and node a problem with `option` points at."""
        if option is None or self.kind in SCALAR_KINDS:
            return self.key, self.node
        return join(self.key, option), self.option_keys.get(option, self.node)


@dataclass(frozen=True, slots=True)
class TlsSpec:
    """A tls mapping, checked; the CA bundle not yet read."""

    verify: bool
    ca_bundle: str | None  # resolved against the inventory's folder
    key: str  # "tls.ca_bundle"
    node: yaml.Node | None


ProviderKey = tuple[str, tuple[tuple[str, str], ...], str | None]


class Resolver:
    """Credentials and TLS contexts for the specs of one inventory, each made once."""

    def __init__(self, reader: NodeReader, environ: Mapping[str, str], folder: Path) -> None:
        self.reader = reader  # for errors that point into the file
        self.environ = environ
        self.folder = folder
        self.providers: dict[ProviderKey, Credentials] = {}
        self.contexts: dict[str, ssl_.SSLContext] = {}  # CA bundle path -> its context

    def check(self, auth: AuthSpec | None, region: str | None, tls: TlsSpec | None) -> None:
        """Make what one project needs, recording problems in the reader rather than raising."""
        if auth is not None and self.provider_key(auth, region) not in self.providers:
            self.reader.part(self.credentials, auth, region)
        if tls is not None and tls.ca_bundle is not None:
            self.reader.part(self.ssl_context, tls)

    def connection(self, tls: TlsSpec | None) -> tuple[ssl_.SSLContext | bool, bool]:
        """`Project.ssl` and `Project.tls_verify` for `tls`."""
        if tls is None:
            return True, True
        if not tls.verify:
            return False, False
        return (True if tls.ca_bundle is None else self.ssl_context(tls)), True

    def provider_key(self, spec: AuthSpec, region: str | None) -> ProviderKey:
        """One provider per distinct entry; an IAM entry without its own endpoint per region too."""
        uses_region = spec.kind == "iam" and "endpoint" not in dict(spec.options)
        return (spec.kind, spec.options, region if uses_region else None)

    def credentials(self, spec: AuthSpec, region: str | None) -> Credentials:
        """The provider for `spec` in `region`, shared by the projects using the same."""
        cache_key = self.provider_key(spec, region)
        if cache_key not in self.providers:
            options = dict(spec.options)
            try:
                provider = provider_from_spec(
                    spec.kind, options, environ=self.environ, base_dir=self.folder, region=region
                )
            except CredentialsUnavailable as exc:
                key, node = spec.where(exc.option)
                hint = exc.hint
                if spec.kind == "iam" and exc.option == "endpoint" and "endpoint" not in options:
                    hint = "give endpoint: https://iam.<region>.myhuaweicloud.com, or the project's region"
                raise self.reader.error(node, key, exc.message, hint=hint) from None
            self.providers[cache_key] = provider
        return self.providers[cache_key]

    def ssl_context(self, spec: TlsSpec) -> ssl_.SSLContext:
        """A context that trusts the CA bundle only, one per bundle; every way of not getting
        one is an error on the ca_bundle line."""
        path = spec.ca_bundle
        assert path is not None
        if path not in self.contexts:
            error = self.reader.error
            hint = "give the path of a PEM file of CA certificates (a relative path starts from the inventory's folder)"
            try:
                self.contexts[path] = ssl_.create_default_context(cafile=path)
            except FileNotFoundError:
                raise error(spec.node, spec.key, f"CA bundle {path} does not exist", hint=hint) from None
            except IsADirectoryError:
                raise error(spec.node, spec.key, f"CA bundle {path} is a directory", hint=hint) from None
            except ssl_.SSLError as exc:
                reason = exc.reason or type(exc).__name__
                message = f"CA bundle {path} holds no usable PEM certificate ({reason})"
                raise error(spec.node, spec.key, message, hint=hint) from None
            except OSError as exc:
                message = f"CA bundle {path} cannot be read ({exc.strerror or type(exc).__name__})"
                raise error(spec.node, spec.key, message, hint="check the file's permissions") from None
        return self.contexts[path]
