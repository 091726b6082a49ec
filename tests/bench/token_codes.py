#!/usr/bin/python3
"""token_codes.py N OUT - makes N authorization codes for tests/bench/token_bench:
for each, /authorize (the login page), the phone's approval through veilctl,
and the page's status poll; writes "code verifier" lines to OUT.  Expects the
environment of `deploy/local/stack env` plus VEILCTL (the binary), BENCH_APP,
BENCH_REDIRECT and BENCH_WALLETS (comma-separated wallet files, one worker each)."""
import base64
import concurrent.futures
import hashlib
import os
import re
import secrets
import subprocess
import sys
import urllib.parse

import requests

ISSUER = os.environ["VEIL_OIDC_ISSUER"]
CA = os.environ["VEILCTL_CA"]
os.environ["REQUESTS_CA_BUNDLE"] = CA  # over any bundle the environment names
APP, REDIRECT = os.environ["BENCH_APP"], os.environ["BENCH_REDIRECT"]
WALLETS, VEILCTL = os.environ["BENCH_WALLETS"].split(","), os.environ["VEILCTL"]


def one(i, wallet):
    s = requests.Session()
    s.verify = CA
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    r = s.get(ISSUER + "/authorize", params={
        "response_type": "code", "client_id": APP, "redirect_uri": REDIRECT,
        "scope": "openid age_over_18", "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8), "code_challenge": challenge.decode(),
        "code_challenge_method": "S256"}, timeout=30)
    r.raise_for_status()
    code = re.search(r'id="binding-code">(\d+)<', r.text).group(1)
    url = re.search(r'id="same-device" href="([^"]+)"', r.text).group(1)
    poll = re.search(r'name="poll" value="([^"]+)"', r.text).group(1)
    p = subprocess.run([VEILCTL, "wallet", "request", "approve", "--wallet", wallet, "--request",
                        url, "--code", code, "--attrs", "age_over_18", "--json"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("approve failed: " + p.stderr.strip())
    j = s.get(ISSUER + "/authorize/status", params={"poll": poll}, timeout=30).json()
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(j["redirect"]).query)
    return q["code"][0], verifier


n, out = int(sys.argv[1]), sys.argv[2]
def slice_of(k):
    # one citizen per worker: one person approves one login at a time
    return [one(i, WALLETS[k]) for i in range(k, n, len(WALLETS))]


with concurrent.futures.ThreadPoolExecutor(len(WALLETS)) as ex, open(out, "w") as f:
    for part in ex.map(slice_of, range(len(WALLETS))):
        for code, verifier in part:
            f.write(f"{code} {verifier}\n")
print(f"token_codes: {n} codes in {out}")
