#!/usr/bin/env python3
"""Writes the benchmarks' access file: 1,000 tokens of 10 read prefixes each (10,000 rules) and
an HS256 JWT key; the last token listed may read bench/. Prints that token.
Usage: bench/access-file.py ACCESS_JSON SECRET"""
import hashlib, json, secrets, sys

path, secret = sys.argv[1], sys.argv[2]
tokens, last = [], None
for i in range(1000):
    last = "kv_" + secrets.token_urlsafe(32)
    prefixes = [f"tenant/{i}/{j}/" for j in range(9)] + (["bench/"] if i == 999 else [f"tenant/{i}/shared/"])
    tokens.append({"id": f"client-{i}", "sha256": hashlib.sha256(last.encode()).hexdigest(), "rules": {"read": prefixes}})
json.dump({"tokens": tokens, "jwt": {"keys": [{"kid": "app", "alg": "HS256", "secret": secret}]}}, open(path, "w"), indent=1)
print(last)
