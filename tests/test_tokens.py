"""Access tokens: HS256 JWTs with identity, role, room and grants."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from teller.config import load_config
from teller.errors import Forbidden, Unauthorized
from teller.signaling.tokens import ROLES, AccessToken, Grants, TokenIssuer, issuer_for, resolve_secret

SECRET = "unit-test-secret-0123456789abcdef"
issuer = TokenIssuer(SECRET)


def forge(secret: str = SECRET, **overrides: Any) -> str:
    """A JWT made by hand, as someone other than TokenIssuer.issue would make it."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "teller",
        "sub": "u1",
        "role": "customer",
        "room": "r1",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, secret, algorithm="HS256")


def unauthorized_code(token: str | None, verifier: TokenIssuer = issuer) -> str:
    with pytest.raises(Unauthorized) as info:
        verifier.verify(token)
    assert info.value.status == 401
    return info.value.code


# -- round trip ---------------------------------------------------------------------------


def test_issue_verify_round_trip() -> None:
    before = int(time.time())
    token = issuer.issue(room="branch-7", role="agent", subject="agent-42", name="Ana", ttl_s=120)
    claims = issuer.verify(token)
    assert isinstance(claims, AccessToken)
    assert claims.subject == "agent-42"
    assert claims.name == "Ana"
    assert claims.role == "agent"
    assert claims.room == "branch-7"
    assert claims.grants == Grants(publish=True, subscribe=True, data=True, admin=False)
    assert before + 120 <= claims.expires_at <= int(time.time()) + 120
    assert before <= claims.issued_at <= int(time.time())
    assert len(claims.token_id) == 32


def test_subject_and_name_default() -> None:
    claims = issuer.verify(issuer.issue(room="r1", role="customer"))
    assert claims.subject.startswith("customer-") and len(claims.subject) > len("customer-")
    assert claims.name == claims.subject
    other = issuer.verify(issuer.issue(room="r1", role="customer"))
    assert other.subject != claims.subject
    assert other.token_id != claims.token_id


def test_claims_on_the_wire() -> None:
    token = issuer.issue(room="r1", role="compliance", subject="c1", ttl_s=60)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="teller")
    assert claims["grants"] == {"publish": False, "subscribe": True, "data": False, "admin": False}
    assert claims["exp"] - claims["iat"] == 60
    assert claims["nbf"] <= claims["iat"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


@pytest.mark.parametrize(
    ("role", "grants"),
    [
        ("customer", Grants(True, True, True, False)),
        ("agent", Grants(True, True, True, False)),
        ("officer", Grants(True, True, True, False)),
        ("reviewer", Grants(True, True, True, False)),
        ("supervisor", Grants(True, True, True, True)),
        ("compliance", Grants(False, True, False, False)),
        ("service", Grants(True, True, True, True)),
    ],
)
def test_grants_by_role(role: str, grants: Grants) -> None:
    assert Grants.for_role(role) == grants
    assert issuer.verify(issuer.issue(room="r1", role=role)).grants == grants


def test_every_role_has_default_grants() -> None:
    for role in ROLES:
        Grants.for_role(role)


def test_explicit_grants_override_the_role() -> None:
    token = issuer.issue(room="r1", role="customer", grants=Grants(subscribe=True))
    assert issuer.verify(token).grants == Grants(False, True, False, False)


def test_long_names_are_cut_at_128() -> None:
    claims = issuer.verify(forge(name="n" * 500))
    assert claims.name == "n" * 128


def test_hand_made_token_without_grants_gets_none() -> None:
    claims = issuer.verify(forge())
    assert claims.grants == Grants()
    assert claims.name == "u1"


# -- refusals ----------------------------------------------------------------------------------


def test_expired_token() -> None:
    now = int(time.time())
    assert unauthorized_code(forge(iat=now - 100, exp=now - 30)) == "token_expired"


def test_expiry_has_small_leeway() -> None:
    now = int(time.time())
    issuer.verify(forge(exp=now - 1))  # within the 5 s leeway


def test_wrong_secret() -> None:
    other = TokenIssuer("another-secret-0123456789abcdef-xyz")
    assert unauthorized_code(other.issue(room="r1", role="agent")) == "token_invalid"


def test_wrong_issuer() -> None:
    other = TokenIssuer(SECRET, issuer="someone-else")
    assert unauthorized_code(other.issue(room="r1", role="agent")) == "token_invalid"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_tampered_payload() -> None:
    token = issuer.issue(room="r1", role="customer")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["room"] = "*"
    claims["grants"]["admin"] = True
    tampered = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    assert unauthorized_code(tampered) == "token_invalid"


def test_unsigned_token_is_refused() -> None:
    token = jwt.encode({"sub": "u", "role": "service", "room": "*", "exp": int(time.time()) + 60, "iss": "teller"}, None, algorithm="none")
    assert unauthorized_code(token) == "token_invalid"


@pytest.mark.parametrize("token", ["", None])
def test_missing_token(token: str | None) -> None:
    assert unauthorized_code(token) == "token_missing"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 50])
def test_garbage_token(token: str) -> None:
    assert unauthorized_code(token) == "token_invalid"


@pytest.mark.parametrize("missing", ["exp", "sub", "room", "role"])
def test_required_claims(missing: str) -> None:
    assert unauthorized_code(forge(**{missing: None})) == "token_invalid"


def test_not_yet_valid_token() -> None:
    assert unauthorized_code(forge(nbf=int(time.time()) + 600)) == "token_invalid"


def test_unknown_role_rejected_at_issue() -> None:
    with pytest.raises(ValueError, match="role"):
        issuer.issue(room="r1", role="king")


def test_unknown_role_rejected_at_verify() -> None:
    assert unauthorized_code(forge(role="king")) == "token_invalid"


def test_grants_that_are_not_an_object_are_refused() -> None:
    assert unauthorized_code(forge(grants=["admin"])) == "token_invalid"


def test_empty_room_rejected_at_issue() -> None:
    with pytest.raises(ValueError, match="room"):
        issuer.issue(room="", role="agent")


# -- room "*" ----------------------------------------------------------------------------------


def test_any_room_needs_admin_at_issue() -> None:
    with pytest.raises(ValueError, match="admin"):
        issuer.issue(room="*", role="agent")
    with pytest.raises(ValueError, match="admin"):
        issuer.issue(room="*", role="service", grants=Grants(True, True, True, False))


def test_any_room_with_admin() -> None:
    claims = issuer.verify(issuer.issue(room="*", role="service"))
    assert claims.room == "*"
    assert claims.allows_room("anything") and claims.allows_room("other")
    claims.require_room("anything")


def test_hand_made_any_room_token_without_admin_is_invalid() -> None:
    token = forge(room="*", grants={"publish": True, "subscribe": True, "data": True})
    assert unauthorized_code(token) == "token_invalid"
    token = forge(room="*", role="service", grants={"admin": False})
    assert unauthorized_code(token) == "token_invalid"


def test_hand_made_any_room_token_with_admin_is_valid() -> None:
    claims = issuer.verify(forge(room="*", role="service", grants={"admin": True}))
    assert claims.grants.admin and claims.room == "*"


# -- require_room / require -----------------------------------------------------------------------


def test_require_room() -> None:
    claims = issuer.verify(issuer.issue(room="r1", role="agent"))
    claims.require_room("r1")
    with pytest.raises(Forbidden) as info:
        claims.require_room("r2")
    assert info.value.code == "room_forbidden"
    assert info.value.status == 403
    assert not claims.allows_room("*")


def test_admin_for_one_room_is_not_for_every_room() -> None:
    claims = issuer.verify(issuer.issue(room="r1", role="service"))
    assert claims.grants.admin
    with pytest.raises(Forbidden) as info:
        claims.require_room("r2")
    assert info.value.code == "room_forbidden"


@pytest.mark.parametrize("grant", ["publish", "subscribe", "data", "admin"])
def test_require_grant(grant: str) -> None:
    have = issuer.verify(issuer.issue(room="r1", role="agent", grants=Grants(**{grant: True})))
    have.require(grant)
    lack = issuer.verify(issuer.issue(room="r1", role="agent", grants=Grants(**{g: True for g in ("publish", "subscribe", "data", "admin") if g != grant})))
    with pytest.raises(Forbidden) as info:
        lack.require(grant)
    assert info.value.code == "grant_missing"
    assert grant in info.value.message


# -- ttl and secret length ---------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [0, -1, 86401])
def test_ttl_out_of_bounds(ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl"):
        issuer.issue(room="r1", role="agent", ttl_s=ttl)


def test_ttl_bounds_inclusive() -> None:
    now = int(time.time())
    assert issuer.verify(issuer.issue(room="r1", role="agent", ttl_s=86400)).expires_at >= now + 86400
    assert issuer.verify(issuer.issue(room="r1", role="agent", ttl_s=1)).expires_at >= now + 1


def test_max_ttl_is_configurable() -> None:
    short = TokenIssuer(SECRET, max_ttl_s=60)
    short.issue(room="r1", role="agent", ttl_s=60)
    with pytest.raises(ValueError):
        short.issue(room="r1", role="agent", ttl_s=61)


def test_short_secret_rejected() -> None:
    with pytest.raises(ValueError, match="16"):
        TokenIssuer("short")
    TokenIssuer("x" * 16)


# -- resolve_secret ----------------------------------------------------------------------------


def _config(tmp_path: Path, secret: str = "") -> Any:
    return load_config(
        overrides={"auth": {"secret": secret}, "storage": {"data_dir": str(tmp_path / "data")}}, env={}
    )


def test_resolve_secret_generates_once(tmp_path: Path) -> None:
    config = _config(tmp_path)
    first = resolve_secret(config)
    path = tmp_path / "data" / "secret.key"
    assert path.exists()
    assert path.read_text().strip() == first
    assert len(first) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert resolve_secret(config) == first
    assert resolve_secret(_config(tmp_path)) == first


def test_resolve_secret_reads_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret.key").write_text("kept-secret-0123456789abcdef\n")
    assert resolve_secret(_config(tmp_path)) == "kept-secret-0123456789abcdef"


def test_resolve_secret_prefers_configured(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret.key").write_text("file-secret-0123456789abcdef")
    assert resolve_secret(_config(tmp_path, "configured-secret-0123456789")) == "configured-secret-0123456789"


def test_resolve_secret_configured_writes_nothing(tmp_path: Path) -> None:
    resolve_secret(_config(tmp_path, "configured-secret-0123456789"))
    assert not (tmp_path / "data" / "secret.key").exists()


def test_issuer_for_uses_config(tmp_path: Path) -> None:
    config = load_config(
        overrides={
            "auth": {"secret": SECRET, "issuer": "bank", "max_ttl_s": 100},
            "storage": {"data_dir": str(tmp_path / "data")},
        },
        env={},
    )
    made = issuer_for(config)
    token = made.issue(room="r1", role="agent", ttl_s=100)
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["iss"] == "bank"
    assert unauthorized_code(token, issuer) == "token_invalid"  # issuer "teller" refuses it
    with pytest.raises(ValueError):
        made.issue(room="r1", role="agent", ttl_s=101)
