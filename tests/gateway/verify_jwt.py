#!/usr/bin/python3
"""Verifies veil assertions with PyJWT, an implementation veil does not share code with.

usage: verify_jwt.py JWKS_FILE TOKENS_FILE
TOKENS_FILE has one "<audience> <compact JWS>" per line.  Each token must
verify against the key named by its kid with alg EdDSA, for that audience,
unexpired, with the claims an app relies on.  Prints "verified N" and exits
non-zero if any token fails.
"""
import json
import sys

import jwt

jwks = json.load(open(sys.argv[1]))
keys = {k["kid"]: jwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(k)) for k in jwks["keys"]}
ok = 0
for line in open(sys.argv[2]):
    audience, token = line.split()
    kid = jwt.get_unverified_header(token)["kid"]
    claims = jwt.decode(token, keys[kid], algorithms=["EdDSA"], audience=audience,
                        options={"require": ["iss", "aud", "sub", "iat", "exp", "jti"]})
    assert claims["aud"] == audience
    ok += 1
print("verified", ok)
