"""`POST /oauth/token`: OAuth 2.0 client credentials (RFC 6749 section 4.4), with authlib.

authlib's authorization server does the protocol: the form body, client authentication by HTTP
Basic (`client_secret_basic`) or in the body (`client_secret_post`), the grant type, the scope and
the RFC 6749 section 5.2 errors as JSON. sendtime supplies the client store (serving/clients.py),
the token format and storage, and three rules DESIGN.md sets:

* `invalid_client` is a 401 with `WWW-Authenticate: Basic` however the client sent its credentials;
* a scope the client lacks is `invalid_scope` (authlib would silently narrow it);
* no input causes a 500: a malformed request is `invalid_request`.

A token is `sto_` + 43 url-safe characters; only its sha256 is stored (`oauth_tokens`), with its
client, scopes and expiry (`oauth_token_lifetime`, 1 h by default). serving/auth.py honours it on
every route wherever an API key is, within its scopes, and refuses it once it expired or its client
was revoked (checked on every request). Failed client authentications count against the caller's
address like failed API keys (serving/app.py).
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
)
from authlib.oauth2.rfc6749.util import scope_to_list
from flask import Blueprint, Flask, Response, g, request
from sqlalchemy import delete, insert, select

from pipeline.store import oauth_clients, oauth_tokens
from serving.auth import TOKEN_PREFIX
from serving.keys import SCOPES, hash_key
from serving.state import writer_engine

GRANT = "client_credentials"

bp = Blueprint("oauth", __name__)


class Client(ClientMixin):
    """A row of `oauth_clients`, as authlib asks about it."""

    def __init__(self, name: str, client_id: str, secret_hash: str, scopes: str) -> None:
        self.name, self.client_id, self.secret_hash = name, client_id, secret_hash
        self.scopes = [s for s in scopes.split(",") if s]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:  # no scope asked: every scope of the client
            return " ".join(self.scopes)
        return " ".join(s for s in scope_to_list(scope) if s in self.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(hash_key(client_secret), self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == GRANT


class ClientCredentials(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_token_request(self) -> None:
        super().validate_token_request()
        lacking = [s for s in scope_to_list(self.request.payload.scope) or [] if s not in self.request.client.scopes]
        if lacking:
            raise InvalidScopeError(f"the client may not ask for the scope {lacking[0]!r}")


class TokenServer(AuthorizationServer):
    def handle_error_response(self, req: Any, error: OAuth2Error) -> Response:
        if isinstance(error, InvalidClientError):
            # DESIGN.md: invalid_client is a 401, whichever way the credentials came; one description
            # whatever failed, so that the endpoint does not tell which client ids exist
            error.status_code = 401
            error.description = "client authentication failed"
            g.auth_failed = True
        return super().handle_error_response(req, error)


def _query_client(client_id: str) -> Client | None:
    if not isinstance(client_id, str) or not client_id or len(client_id) > 64:
        return None
    with writer_engine().connect() as conn:
        row = conn.execute(
            select(
                oauth_clients.c.name, oauth_clients.c.client_id, oauth_clients.c.secret_hash, oauth_clients.c.scopes
            ).where(oauth_clients.c.client_id == client_id, oauth_clients.c.revoked_at.is_(None))
        ).first()
    return Client(*row) if row else None


def _save_token(token: dict[str, Any], req: Any) -> None:
    now = int(time.time())
    client: Client = req.client
    scopes = ",".join(scope_to_list(token.get("scope") or "") or client.scopes)
    with writer_engine().begin() as conn:
        # expired tokens of this client go as it gets a new one: the table stays small
        conn.execute(
            delete(oauth_tokens).where(oauth_tokens.c.client_name == client.name, oauth_tokens.c.expires_at <= now)
        )
        conn.execute(
            insert(oauth_tokens).values(
                token_hash=hash_key(token["access_token"]),
                client_name=client.name,
                scopes=scopes,
                issued_at=now,
                expires_at=now + int(token["expires_in"]),
            )
        )


def _new_token(*_args: Any, **_kwargs: Any) -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def init_app(app: Flask) -> None:
    """Register the token endpoint and its authorization server on the app."""
    settings = app.extensions["sendtime"].settings
    app.config["OAUTH2_ACCESS_TOKEN_GENERATOR"] = _new_token
    app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {GRANT: settings.oauth_token_seconds}
    app.config["OAUTH2_SCOPES_SUPPORTED"] = list(SCOPES)
    server = TokenServer(app, query_client=_query_client, save_token=_save_token)
    server.register_grant(ClientCredentials)
    app.extensions["sendtime.oauth"] = server
    app.register_blueprint(bp)


@bp.post("/oauth/token")
def token() -> Response:
    """Open (serving/access.py): the client authenticates with its own credentials here."""
    from flask import current_app

    server: TokenServer = current_app.extensions["sendtime.oauth"]
    if not (request.form.get("grant_type") or "").strip():
        return server.handle_error_response(None, InvalidRequestError("grant_type is required"))
    try:
        return server.create_token_response()
    except (UnicodeError, ValueError, TypeError):
        # a Basic header that is not UTF-8, a malformed form: the client's error, never a 500
        return server.handle_error_response(None, InvalidRequestError("malformed token request"))
