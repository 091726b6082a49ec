#!/usr/bin/python3
"""oidc_rp.py - veil's OpenID Connect door driven by an off-the-shelf relying
party (Debian's python3-authlib), a simulated phone (veilctl) and, for the
login page, a real headless Chromium (python3-selenium).

    oidc_rp.py SCENARIO      (run by tests/gateway/check_oidc against a real stack)

The environment names the stack: VEIL_OIDC_ISSUER, VEILCTL_GATEWAY, VEILCTL_CA,
VEILCTL_CERTS, VEILCTL_ADMIN, VEILCTL_PROOFING_KEY, VEILCTL (the veilctl
binary) and OIDC_SCRATCH (a scratch folder).  Every scenario prints what it
checked and exits 0, or raises.
"""
import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.parse

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, JsonWebToken
from authlib.oauth2.rfc7523 import PrivateKeyJWT

ISSUER = os.environ["VEIL_OIDC_ISSUER"]
CA = os.environ["VEILCTL_CA"]
CERTS = os.environ["VEILCTL_CERTS"]
VEILCTL = os.environ["VEILCTL"]
SCRATCH = os.environ["OIDC_SCRATCH"]
os.environ["REQUESTS_CA_BUNDLE"] = CA  # every request, authlib's own included
# The app's registered redirect URI: only the browser scenario serves it.
CALLBACK_PORT = int(os.environ["OIDC_CALLBACK_PORT"])
REDIRECT = f"http://127.0.0.1:{CALLBACK_PORT}/callback"


def log(*a):
    print(*a, flush=True)


def veilctl(*args, check=True):
    p = subprocess.run([VEILCTL, *args, "--json"], capture_output=True, text=True)
    out = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else None
    if check and p.returncode != 0:
        raise AssertionError(f"veilctl {' '.join(args)} failed: {p.stderr.strip()}")
    return p.returncode, out


def discovery():
    r = requests.get(ISSUER + "/.well-known/openid-configuration", verify=CA, timeout=10)
    r.raise_for_status()
    d = r.json()
    assert d["issuer"] == ISSUER, d["issuer"]
    return d


def register(app, auth, alg, attrs, jwks_file=None):
    """Registers app for OIDC (ALREADY_EXISTS is fine: scenarios share the stack)."""
    args = ["admin", "apps", "register", "--app", app, "--name", f"Test {app}",
            "--kind", "commercial", "--attrs", attrs, "--redirect-uri", REDIRECT,
            "--auth", auth, "--id-token-alg", alg,
            "--attr-purpose", "age_over_18=to sell age-restricted games",
            "--attr-purpose", "province=regional prices"]
    if jwks_file:
        args += ["--jwks", jwks_file]
    rc, out = veilctl(*args, check=False)
    if rc != 0:
        assert out and out["error"]["code"] == "ALREADY_EXISTS", out
    return out


def rsa_client_key(app):
    """The app's RSA key pair for private_key_jwt: private JWK, and its public set on disk."""
    path = os.path.join(SCRATCH, f"{app}.jwk.json")
    if os.path.exists(path):
        with open(path) as f:
            key = JsonWebKey.import_key(json.load(f))
    else:
        key = JsonWebKey.generate_key("RSA", 2048, is_private=True)
        key_dict = key.as_dict(is_private=True)
        key_dict["kid"] = f"{app}-1"
        with open(path, "w") as f:
            json.dump(key_dict, f)
        key = JsonWebKey.import_key(key_dict)
    pub = key.as_dict(is_private=False)
    pub["kid"] = f"{app}-1"
    pub["alg"] = "RS256"
    pub["use"] = "sig"
    jwks_file = os.path.join(SCRATCH, f"{app}.jwks.json")
    with open(jwks_file, "w") as f:
        json.dump({"keys": [pub]}, f)
    priv = key.as_dict(is_private=True)
    priv["kid"] = f"{app}-1"
    return priv, jwks_file


def wallet(name):
    if name == "demo":  # deploy/local/demo hands over its citizen's wallet
        return os.environ["DEMO_WALLET"]
    path = os.path.join(SCRATCH, f"{name}.wallet")
    if not os.path.exists(path):
        veilctl("wallet", "create", "--wallet", path)
        _, idn = veilctl("dev", "id-number", "--birth", "19900101")
        veilctl("wallet", "enroll", "--wallet", path, "--id-number", idn["id_number"],
                "--name", f"Citizen {name}")
    return path


def tls_client_auth(client, method, uri, headers, body):
    """RFC 8705: the client certificate authenticates; client_id goes in the body."""
    from authlib.common.urls import add_params_to_qs
    body = add_params_to_qs(body or "", [("client_id", client.client_id)])
    return uri, headers, body


def session_for(app, auth, d, private_jwk=None, scope="openid age_over_18 address"):
    s = OAuth2Session(app, redirect_uri=REDIRECT, scope=scope, code_challenge_method="S256",
                      token_endpoint_auth_method=auth)
    s.verify = CA
    if auth == "tls_client_auth":
        s.cert = (os.path.join(CERTS, f"app-{app}.crt"), os.path.join(CERTS, f"app-{app}.key"))
        s.register_client_auth_method(("tls_client_auth", tls_client_auth))
    else:
        s.client_secret = private_jwk  # PrivateKeyJWT signs with the client "secret"
        s.register_client_auth_method(PrivateKeyJWT(d["token_endpoint"], alg="RS256"))
    return s


class Page:
    """The login page as the browser gets it: binding code, veil: URL, poll token."""

    def __init__(self, html):
        self.html = html
        m = re.search(r'id="binding-code">(\d+)<', html)
        self.code = m.group(1) if m else None
        m = re.search(r'id="same-device" href="(veil:login\?request=[A-Za-z0-9_-]+)"', html)
        self.request = m.group(1) if m else None
        m = re.search(r'name="poll" value="([A-Za-z0-9_-]+)"', html)
        self.poll = m.group(1) if m else None


def begin(s, d, **extra):
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    url, state = s.create_authorization_url(d["authorization_endpoint"], nonce=nonce,
                                            code_verifier=verifier, **extra)
    r = requests.get(url, verify=CA, timeout=10, allow_redirects=False)
    return r, verifier, nonce, state


def wait_redirect(poll, timeout=30):
    """What the page's script does: long-poll the status until it says where to go."""
    end = time.time() + timeout
    while time.time() < end:
        r = requests.get(ISSUER + "/authorize/status", params={"poll": poll, "wait": "1"},
                         verify=CA, timeout=30)
        j = r.json()
        if j.get("redirect") or j["status"] != "pending":
            return j
    raise AssertionError("the page never learned of the approval")


def id_token_claims(d, token, app, nonce):
    jwks = requests.get(d["jwks_uri"], verify=CA, timeout=10).json()
    jwt = JsonWebToken(["EdDSA", "RS256"])
    claims = jwt.decode(token["id_token"], JsonWebKey.import_key_set(jwks),
                        claims_options={"iss": {"essential": True, "value": ISSUER},
                                        "aud": {"essential": True, "value": app},
                                        "nonce": {"essential": True, "value": nonce},
                                        "sub": {"essential": True},
                                        "auth_time": {"essential": True}})
    claims.validate(leeway=5)
    return claims


def login(app, auth, alg, citizen, approve_attrs, scope="openid age_over_18 address",
          remember=None):
    """The whole flow; returns (discovery, session, token, claims, page, approve output)."""
    d = discovery()
    private_jwk = None
    if auth == "private_key_jwt":
        private_jwk, jwks_file = rsa_client_key(app)
        register(app, auth, alg, "age_over_18,province", jwks_file)
    else:
        register(app, auth, alg, "age_over_18,province")
    w = wallet(citizen)
    s = session_for(app, auth, d, private_jwk, scope)
    r, verifier, nonce, state = begin(s, d)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    csp = r.headers.get("Content-Security-Policy", "")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp
    page = Page(r.text)
    assert page.code and page.request and page.poll, "page lacks code, link or poll token"
    assert "<svg" in r.text and "Test " + app in r.text
    _, shown = veilctl("wallet", "request", "show", "--wallet", w, "--request", page.request)
    assert shown["app"] == app and page.code in shown["binding_codes"], shown
    args = ["wallet", "request", "approve", "--wallet", w, "--request", page.request,
            "--code", page.code, "--attrs", approve_attrs]
    if remember:
        args += ["--remember", str(remember)]
    _, approved = veilctl(*args)
    j = wait_redirect(page.poll)
    assert j["status"] == "approved", j
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(j["redirect"]).query)
    assert q["state"] == [state], "state must come back unchanged"
    token = s.fetch_token(d["token_endpoint"], authorization_response=j["redirect"],
                          code_verifier=verifier)
    claims = id_token_claims(d, token, app, nonce)
    assert claims["sub"] == approved["sub"], "the ID token's sub is the approved pseudonym"
    assert claims["azp"] == app and claims["acr"] and claims["amr"], claims
    return d, s, token, claims, page, approved, j["redirect"], verifier


def grpc_sub(app, citizen, attrs):
    _, out = veilctl("app", "login", "--app", app, "--wallet", wallet(citizen), "--attrs", attrs)
    return out["claims"]["sub"]


def scenario_flow(app, auth, alg):
    d, s, token, claims, page, approved, _, _ = login(app, auth, alg, "alice", "age_over_18")
    header = json.loads(base64.urlsafe_b64decode(token["id_token"].split(".")[0] + "=="))
    assert header["alg"] == alg, header
    # registered (age_over_18, province) ∩ consented (age_over_18) ∩ requested (+ address)
    assert claims["age_over_18"] is True, claims
    assert "address" not in claims and "province" not in claims, "province was not consented"
    assert "name" not in claims and "birthdate" not in claims
    log(f"{alg}: ID token verified with the JWKS; claims", sorted(claims.keys()))
    # /userinfo with the access token (certificate-bound for tls_client_auth)
    info = s.get(d["userinfo_endpoint"], timeout=10).json()
    assert info["sub"] == claims["sub"] and info["age_over_18"] is True, info
    # the same pseudonym the gRPC flow gives this app
    g = grpc_sub(app, "alice", "age_over_18")
    assert g == claims["sub"], f"gRPC sub {g} differs from the OIDC sub {claims['sub']}"
    log(f"{alg}: sub {claims['sub']} equals the gRPC flow's")
    # an unregistered attribute asked for is withheld and reported
    return claims


def scenario_eddsa():
    scenario_flow("chat.wechat", "tls_client_auth", "EdDSA")
    # RFC 8936 poll delivery: the same stream and cursors as PollEvents
    d = discovery()
    cert = (os.path.join(CERTS, "app-chat.wechat.crt"), os.path.join(CERTS, "app-chat.wechat.key"))
    url = d["set_poll_endpoint"] + "?client_id=chat.wechat"
    r = requests.post(url, json={"maxEvents": 10}, cert=cert, timeout=10)
    assert r.status_code == 200, r.text
    j = r.json()
    assert isinstance(j["sets"], dict) and "moreAvailable" in j and j["cursor"], j
    _, grpc = veilctl("app", "events", "--app", "chat.wechat")
    assert grpc["cursor"] == j["cursor"], (grpc, j)
    r = requests.post(url, json={"maxEvents": 10, "cursor": "not a cursor"}, cert=cert,
                      timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
    r = requests.post(url, json={"maxEvents": 10}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    log("SET poll: same cursor as PollEvents; bad cursor invalid_request; no certificate "
        "invalid_client")


def scenario_rs256():
    claims = scenario_flow("shop.taobao", "private_key_jwt", "RS256")
    # another login consenting to both: address (province) now released
    _, _, _, c2, _, approved, _, _ = login("shop.taobao", "private_key_jwt", "RS256", "alice",
                                           "age_over_18,province", remember=30)
    assert "address" in c2 and c2["address"].get("region"), c2
    assert c2["sub"] == claims["sub"]
    assert len(approved["receipt_ids"]) == 2, approved
    log("RS256: province released as address.region after consent:", c2["address"])
    # a client assertion used twice (same jti) is refused the second time
    from authlib.jose import jwt
    d = discovery()
    priv, _ = rsa_client_key("shop.taobao")
    now = int(time.time())
    assertion = jwt.encode({"alg": "RS256", "kid": priv["kid"]},
                           {"iss": "shop.taobao", "sub": "shop.taobao",
                            "aud": d["token_endpoint"], "iat": now, "exp": now + 60,
                            "jti": secrets.token_urlsafe(12)}, priv).decode()
    form = {"grant_type": "authorization_code", "code": "A" * 43, "redirect_uri": REDIRECT,
            "code_verifier": "v" * 43, "client_id": "shop.taobao",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion}
    first = requests.post(d["token_endpoint"], data=form, timeout=10)
    assert first.json()["error"] == "invalid_grant", first.text  # authenticated; no such code
    again = expect_oauth_error(requests.post(d["token_endpoint"], data=form, timeout=10), 401,
                               "invalid_client")
    assert "used before" in again["error_description"], again
    log("private_key_jwt: a client assertion replayed (same jti) is invalid_client")
    # RFC 8936 poll delivery authenticates as /token does: this app by its client assertion
    def poll_assertion(aud):
        t = int(time.time())
        return jwt.encode({"alg": "RS256", "kid": priv["kid"]},
                          {"iss": "shop.taobao", "sub": "shop.taobao", "aud": aud, "iat": t,
                           "exp": t + 60, "jti": secrets.token_urlsafe(12)}, priv).decode()
    poll = d["set_poll_endpoint"]
    params = {"client_id": "shop.taobao",
              "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
              "client_assertion": poll_assertion(poll)}
    r = requests.post(poll, params=params, json={"maxEvents": 10}, timeout=10)
    assert r.status_code == 200, r.text
    _, grpc = veilctl("app", "events", "--app", "shop.taobao")
    assert grpc["cursor"] == r.json()["cursor"], (grpc, r.json())
    again = requests.post(poll, params=params, json={"maxEvents": 10}, timeout=10)
    assert "used before" in expect_oauth_error(again, 401, "invalid_client")["error_description"]
    params["client_assertion"] = poll_assertion(d["token_endpoint"] + "/elsewhere")
    expect_oauth_error(requests.post(poll, params=params, json={}, timeout=10), 401,
                       "invalid_client")
    del params["client_assertion"]
    expect_oauth_error(requests.post(poll, params=params, json={}, timeout=10), 401,
                       "invalid_client")
    log("SET poll with private_key_jwt: same cursor as PollEvents; a replayed, misaddressed or "
        "missing client assertion is invalid_client")


def expect_oauth_error(r, status, code):
    assert r.status_code == status, (r.status_code, r.text[:300])
    j = r.json()
    assert j["error"] == code, j
    return j


def scenario_errors():
    d = discovery()
    register("chat.wechat", "tls_client_auth", "EdDSA", "age_over_18,province")
    cert = (os.path.join(CERTS, "app-chat.wechat.crt"), os.path.join(CERTS, "app-chat.wechat.key"))
    base = {"client_id": "chat.wechat", "redirect_uri": REDIRECT, "response_type": "code",
            "scope": "openid age_over_18", "state": "s1", "nonce": "n1",
            "code_challenge": base64.urlsafe_b64encode(hashlib.sha256(b"v" * 43).digest())
            .rstrip(b"=").decode(), "code_challenge_method": "S256"}

    def authorize(**changes):
        p = dict(base)
        for k, v in changes.items():
            if v is None:
                p.pop(k, None)
            else:
                p[k] = v
        return requests.get(d["authorization_endpoint"], params=p, verify=CA, timeout=10,
                            allow_redirects=False)

    def redirected_error(r, code):
        assert r.status_code == 303, (r.status_code, r.text[:200])
        loc = r.headers["Location"]
        assert loc.startswith(REDIRECT + "?"), loc
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)
        assert q["error"] == [code], q
        return q

    # wrong redirect URI: shown on the page, never redirected
    r = authorize(redirect_uri="https://evil.example/cb")
    assert r.status_code == 400 and "Location" not in r.headers, r.status_code
    assert 'id="error-code">invalid_request<' in r.text
    log("wrong redirect_uri: error page, no redirect")
    r = authorize(client_id="no.such.app")
    assert r.status_code == 400 and "Location" not in r.headers
    assert 'id="error-code">invalid_client<' in r.text
    # errors after the redirect URI is known go back to it with their RFC code
    redirected_error(authorize(response_type="token"), "unsupported_response_type")
    redirected_error(authorize(code_challenge=None), "invalid_request")
    redirected_error(authorize(code_challenge_method="plain"), "invalid_request")
    q = redirected_error(authorize(state=None), "invalid_request")
    redirected_error(authorize(nonce=None), "invalid_request")
    redirected_error(authorize(scope="age_over_18"), "invalid_scope")
    redirected_error(authorize(scope="openid no_such_attribute"), "invalid_scope")
    redirected_error(authorize(prompt="none"), "login_required")
    log("authorize errors: unsupported_response_type, invalid_request (PKCE, state, nonce),"
        " invalid_scope, login_required")

    # a full login to get a code, then PKCE mismatch / replay / another app's credentials
    def fresh_code(citizen="bob"):
        w = wallet(citizen)
        s = session_for("chat.wechat", "tls_client_auth", d, scope="openid age_over_18")
        r, verifier, nonce, state = begin(s, d)
        page = Page(r.text)
        veilctl("wallet", "request", "approve", "--wallet", w, "--request", page.request,
                "--code", page.code, "--attrs", "age_over_18")
        j = wait_redirect(page.poll)
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(j["redirect"]).query)["code"][0]
        return code, verifier

    def token(code, verifier, cert_pair=cert, client_id="chat.wechat", redirect=REDIRECT):
        return requests.post(d["token_endpoint"], data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
            "code_verifier": verifier, "client_id": client_id}, cert=cert_pair, verify=CA,
            timeout=10)

    code, verifier = fresh_code()
    expect_oauth_error(token(code, "w" * 43), 400, "invalid_grant")
    log("PKCE mismatch: invalid_grant")
    # the code was consumed by that attempt: even the right verifier now fails
    expect_oauth_error(token(code, verifier), 400, "invalid_grant")

    code, verifier = fresh_code()
    r = token(code, verifier)
    assert r.status_code == 200, r.text
    access = r.json()["access_token"]
    ui = requests.get(d["userinfo_endpoint"], headers={"Authorization": "Bearer " + access},
                      cert=cert, verify=CA, timeout=10)
    assert ui.status_code == 200, ui.text
    # certificate-bound: the token without the app's certificate is refused
    ui = requests.get(d["userinfo_endpoint"], headers={"Authorization": "Bearer " + access},
                      verify=CA, timeout=10)
    assert ui.status_code == 401 and "invalid_token" in ui.headers.get("WWW-Authenticate", "")
    j = expect_oauth_error(token(code, verifier), 400, "invalid_grant")
    assert "revoked" in j["error_description"], j
    ui = requests.get(d["userinfo_endpoint"], headers={"Authorization": "Bearer " + access},
                      cert=cert, verify=CA, timeout=10)
    assert ui.status_code == 401, "a replayed code revokes the access token issued from it"
    log("code replay: invalid_grant, and the access token issued from it is revoked")

    # another app's client credentials: shop.taobao's certificate for chat.wechat's code
    code, verifier = fresh_code()
    other = (os.path.join(CERTS, "app-shop.taobao.crt"), os.path.join(CERTS, "app-shop.taobao.key"))
    expect_oauth_error(token(code, verifier, cert_pair=other), 401, "invalid_client")
    expect_oauth_error(token(code, verifier, cert_pair=None), 401, "invalid_client")
    # wrong redirect_uri at /token
    expect_oauth_error(token(code, verifier, redirect="http://127.0.0.1:9/other"), 400,
                       "invalid_grant")
    expect_oauth_error(requests.post(d["token_endpoint"], data={"grant_type": "password"},
                                     cert=cert, verify=CA, timeout=10), 400,
                       "unsupported_grant_type")
    expect_oauth_error(requests.post(d["token_endpoint"], data="grant_type=authorization_code"
                                     "&grant_type=authorization_code",
                                     headers={"Content-Type":
                                              "application/x-www-form-urlencoded"},
                                     cert=cert, verify=CA, timeout=10), 400, "invalid_request")
    # an oversized body: refused from its Content-Length, before it is read (headers only
    # are sent, so the answer does not race the upload)
    import socket
    import ssl
    u = urllib.parse.urlsplit(d["token_endpoint"])
    tls = ssl.create_default_context(cafile=CA)
    tls.load_cert_chain(*cert)
    with socket.create_connection((u.hostname, u.port), timeout=10) as raw, \
            tls.wrap_socket(raw, server_hostname=u.hostname) as conn:
        conn.sendall(b"POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                     b"application/x-www-form-urlencoded\r\nContent-Length: 20000\r\n\r\n")
        head = conn.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head[:80]
    log("another app's credentials: invalid_client; oversized body: 413")

    # wrong binding code: refused, the request is cancelled, the page says so
    s = session_for("chat.wechat", "tls_client_auth", d, scope="openid age_over_18")
    r, verifier, nonce, state = begin(s, d)
    page = Page(r.text)
    wrong = "%02d" % (10 + (int(page.code) - 10 + 1) % 90)
    rc, out = veilctl("wallet", "request", "approve", "--wallet", wallet("bob"), "--request",
                      page.request, "--code", wrong, check=False)
    assert rc != 0 and out["error"]["code"] == "PERMISSION_DENIED", out
    rc, out = veilctl("wallet", "request", "approve", "--wallet", wallet("bob"), "--request",
                      page.request, "--code", page.code, check=False)
    assert rc != 0 and out["error"]["code"] == "FAILED_PRECONDITION", out
    j = wait_redirect(page.poll)
    assert j["status"] == "failed" and "redirect" not in j, j
    log("wrong binding code: PERMISSION_DENIED, request cancelled, page shows it")

    # the citizen denies: the app gets access_denied at its registered URI
    r, verifier, nonce, state = begin(s, d)
    page = Page(r.text)
    veilctl("wallet", "request", "deny", "--wallet", wallet("bob"), "--request", page.request)
    j = wait_redirect(page.poll)
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(j["redirect"]).query)
    assert q["error"] == ["access_denied"] and q["state"] == [state], q
    log("denied on the phone: access_denied")

    # one citizen approving two logins to the same app at the same moment (two tabs)
    import concurrent.futures
    pages = []
    for _ in range(2):
        r, _, _, _ = begin(s, d)
        pages.append(Page(r.text))

    def approve(p):
        return veilctl("wallet", "request", "approve", "--wallet", wallet("erin"), "--request",
                       p.request, "--code", p.code, "--attrs", "age_over_18", check=False)
    wallet("erin")
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        results = list(ex.map(approve, pages))
    assert all(rc == 0 for rc, _ in results), results
    log("two simultaneous approvals by one citizen for one app: both succeed")

    # an update that says nothing about OpenID Connect keeps the registration
    veilctl("admin", "apps", "update", "--app", "chat.wechat", "--name", "Test chat.wechat",
            "--kind", "commercial", "--attrs", "age_over_18,province")
    _, apps = veilctl("admin", "apps", "list")
    mine = [a for a in apps if a["app"] == "chat.wechat"][0]
    assert mine["redirect_uris"] == [REDIRECT] and mine["token_auth"] == "tls_client_auth", mine
    log("admin apps update without OIDC flags keeps the OIDC registration")

    # an unknown request id
    rc, out = veilctl("wallet", "request", "show", "--wallet", wallet("bob"), "--request",
                      "veil:login?request=" + "A" * 43, check=False)
    assert rc != 0 and out["error"]["code"] == "NOT_FOUND", out


def scenario_expired():
    """Run against a gateway whose login requests live 2 s (GATEWAY_OIDC_REQUEST_TTL_S=2)."""
    d = discovery()
    register("chat.wechat", "tls_client_auth", "EdDSA", "age_over_18,province")
    s = session_for("chat.wechat", "tls_client_auth", d, scope="openid age_over_18")
    r, verifier, nonce, state = begin(s, d)
    page = Page(r.text)
    time.sleep(3)
    rc, out = veilctl("wallet", "request", "approve", "--wallet", wallet("carol"), "--request",
                      page.request, "--code", page.code, check=False)
    assert rc != 0 and out["error"]["code"] == "FAILED_PRECONDITION", out
    assert "expired" in out["error"]["message"], out
    j = wait_redirect(page.poll)
    assert j["status"] == "expired" and "redirect" not in j, j
    log("expired request: FAILED_PRECONDITION on the phone, page shows it expired")


def scenario_ratelimit():
    """Against a gateway allowing 5 requests a minute per address."""
    d = discovery()
    register("chat.wechat", "tls_client_auth", "EdDSA", "age_over_18,province")
    statuses = []
    for _ in range(8):
        r = requests.post(d["token_endpoint"], data={"grant_type": "authorization_code"},
                          verify=CA, timeout=10)
        statuses.append(r.status_code)
    assert statuses[-1] == 429, statuses
    r = requests.post(d["token_endpoint"], data={"grant_type": "authorization_code"},
                      verify=CA, timeout=10)
    assert r.json()["error"] == "too_many_requests" and r.headers.get("Retry-After"), r.text
    log("rate limit: 429 too_many_requests with Retry-After after", statuses.index(429), "calls")


def scenario_browser():
    """The login page in a real headless Chromium: QR and code shown, redirect followed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import http.server
    import threading

    class Callback(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<title>app callback</title><p id=app>signed in</p>")

        def log_message(self, *a):
            pass

    # threaded: a browser's idle pre-connection must not block the next request
    server = http.server.ThreadingHTTPServer(("127.0.0.1", CALLBACK_PORT), Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    d = discovery()
    register("chat.wechat", "tls_client_auth", "EdDSA", "age_over_18,province")
    s = session_for("chat.wechat", "tls_client_auth", d, scope="openid age_over_18")
    verifier = secrets.token_urlsafe(48)
    url, state = s.create_authorization_url(d["authorization_endpoint"], nonce="browser-nonce",
                                            code_verifier=verifier)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    import tempfile
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--ignore-certificate-errors"):
        opts.add_argument(a)
    # a fresh profile per browser: settings (JavaScript off) must not carry over
    opts.add_argument("--user-data-dir=" + tempfile.mkdtemp(dir=SCRATCH))
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(url)
        qr = driver.find_element(By.CSS_SELECTOR, "svg.qr")
        assert qr.size["width"] > 100, qr.size
        code = driver.find_element(By.ID, "binding-code").text.strip()
        link = driver.find_element(By.ID, "same-device").get_attribute("href")
        assert re.fullmatch(r"\d\d", code) and link.startswith("veil:login?request="), (code, link)
        log("browser: QR code and binding code", code, "shown")
        # no console errors (CSP violations would show there)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        veilctl("wallet", "request", "approve", "--wallet", wallet("dave"), "--request", link,
                "--code", code, "--attrs", "age_over_18")
        try:
            WebDriverWait(driver, 30).until(lambda drv: drv.current_url.startswith(REDIRECT))
        except Exception:
            log("stuck at", driver.current_url, driver.find_element(By.ID, "status").text,
                driver.get_log("browser"))
            raise
        assert driver.find_element(By.ID, "app").text == "signed in"
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(driver.current_url).query)
        assert q["state"] == [state] and q["code"], q
        log("browser: followed the redirect to the app with code and state")
        token = s.fetch_token(d["token_endpoint"], authorization_response=driver.current_url,
                              code_verifier=verifier)
        id_token_claims(d, token, "chat.wechat", "browser-nonce")
        # without JavaScript: the reload button takes over
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings."
                                               "javascript": 2})
        opts.arguments[:] = [a for a in opts.arguments if not a.startswith("--user-data-dir")]
        opts.add_argument("--user-data-dir=" + tempfile.mkdtemp(dir=SCRATCH))
    finally:
        driver.quit()
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        url, state = s.create_authorization_url(d["authorization_endpoint"], nonce="n2",
                                                code_verifier=verifier)
        driver.get(url)
        code = driver.find_element(By.ID, "binding-code").text.strip()
        link = driver.find_element(By.ID, "same-device").get_attribute("href")
        driver.find_element(By.ID, "continue").click()  # not approved yet: the page again
        WebDriverWait(driver, 10).until(
            lambda drv: "/authorize/continue" in drv.current_url and
            drv.execute_script("return document.readyState") == "complete")
        assert driver.find_element(By.ID, "binding-code").text.strip() == code
        veilctl("wallet", "request", "approve", "--wallet", wallet("dave"), "--request", link,
                "--code", code, "--attrs", "age_over_18")
        driver.find_element(By.ID, "continue").click()
        try:
            WebDriverWait(driver, 10).until(lambda drv: drv.current_url.startswith(REDIRECT))
        except Exception:
            log("stuck at", driver.current_url, driver.page_source[:500])
            raise
        log("browser without JavaScript: the continue button follows the approval")
    finally:
        driver.quit()


def scenario_card():
    """The login page's card form (issue 17) in headless Chromium: a counter-issued card, a
    wrong PIN counted and shown, then the right PIN and the redirect; the ID token says card."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import http.server
    import tempfile
    import threading

    class Callback(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<title>app callback</title><p id=app>signed in</p>")

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", CALLBACK_PORT), Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    d = discovery()
    register("chat.wechat", "tls_client_auth", "EdDSA", "age_over_18,province")
    # an elderly citizen without a phone: the counter issues her a card
    card = os.path.join(SCRATCH, "grandmother.card")
    if os.path.exists(card):
        os.unlink(card)
    _, idn = veilctl("dev", "id-number", "--birth", "19400101")
    _, issued = veilctl("counter", "card", "issue", "--id-number", idn["id_number"], "--name",
                        "Grandmother Card", "--pin", "246810", "--out", card)
    s = session_for("chat.wechat", "tls_client_auth", d, scope="openid age_over_18")
    verifier = secrets.token_urlsafe(48)
    url, state = s.create_authorization_url(d["authorization_endpoint"], nonce="card-nonce",
                                            code_verifier=verifier)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--ignore-certificate-errors", "--user-data-dir=" + tempfile.mkdtemp(dir=SCRATCH)):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)

    def type_card(code, pin):
        WebDriverWait(driver, 10).until(lambda drv: drv.find_elements(By.ID, "card-code"))
        driver.find_element(By.ID, "card-code").send_keys(code)
        driver.find_element(By.ID, "card-pin").send_keys(pin)
        driver.find_element(By.ID, "card-login").click()

    try:
        driver.get(url)
        # typed as people type it: lower case, spaces for the dashes
        typed = issued["code"].lower().replace("-", " ")
        type_card(typed, "111111")
        WebDriverWait(driver, 10).until(lambda drv: drv.find_elements(By.ID, "card-error"))
        msg = driver.find_element(By.ID, "card-error").text
        assert msg == "wrong pin: 4 of 5 attempts left", msg
        _, status = veilctl("counter", "card", "status", "--card", card)
        assert status["wrong_pins"] == 1 and status["attempts_left"] == 4, status
        log("card form: a wrong PIN is counted and shown:", msg)
        driver.find_element(By.ID, "card-back").click()
        type_card(issued["code"], "246810")
        try:
            WebDriverWait(driver, 30).until(lambda drv: drv.current_url.startswith(REDIRECT))
        except Exception:
            log("stuck at", driver.current_url, driver.page_source[:800])
            raise
        # no console errors but the wrong PIN's own 400 (CSP violations would show there)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and
                  "/authorize/card - Failed to load resource" not in e["message"]]
        assert not errors, errors
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(driver.current_url).query)
        assert q["state"] == [state] and q["code"], q
        token = s.fetch_token(d["token_endpoint"], authorization_response=driver.current_url,
                              code_verifier=verifier)
        claims = id_token_claims(d, token, "chat.wechat", "card-nonce")
        assert claims["acr"] == "urn:veil:acr:card" and claims["amr"] == ["pin"], claims
        assert claims["age_over_18"] is True, claims
        _, status = veilctl("counter", "card", "status", "--card", card)
        assert status["wrong_pins"] == 0, status
        log("card form: the right PIN logs her in; ID token acr", claims["acr"])
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()


def scenario_demo():
    """deploy/local/demo: a bookshop website logs the demo's citizen in with OpenID Connect."""
    d, s, token, claims, page, approved, redirect, _ = login(
        "web.shudian", "private_key_jwt", "RS256", "demo", "age_over_18")
    log(f"  the login page showed code {page.code} and a QR code of {page.request[:32]}...")
    log(f"  the phone approved (receipts {', '.join(approved['receipt_ids'])});"
        f" the browser went to {redirect[:60]}...")
    log("  the bookshop exchanged the code and verified the RS256 ID token with the JWKS:")
    for k in ("iss", "sub", "aud", "acr", "amr", "age_over_18"):
        log(f"    {k:12} {claims[k]}")
    log("  (province was asked for but not approved on the phone: not in the token)")


SCENARIOS = {"demo": scenario_demo, "eddsa": scenario_eddsa, "rs256": scenario_rs256, "errors": scenario_errors,
             "expired": scenario_expired, "ratelimit": scenario_ratelimit,
             "browser": scenario_browser, "card": scenario_card}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
    log("ok", sys.argv[1])
