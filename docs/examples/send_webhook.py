#!/usr/bin/env python3
"""Send one signed JSON webhook to a local hub (Standard Webhooks scheme).

Usage: send_webhook.py [URL] [BODY]; the secret comes from
DEALBRIDGE_HTTP_SECRET (default: the README's quick-start secret).
"""
import base64, hashlib, hmac, json, os, sys, time, urllib.error, urllib.request, uuid

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/hooks/http"
body = (sys.argv[2] if len(sys.argv) > 2 else json.dumps({"deal": {"id": 42, "stage": "payment"}})).encode()
secret = os.environ.get("DEALBRIDGE_HTTP_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
msg_id, ts = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
sig = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
req = urllib.request.Request(url, data=body, method="POST", headers={
    "content-type": "application/json", "webhook-id": msg_id,
    "webhook-timestamp": ts, "webhook-signature": f"v1,{sig}"})
try:
    with urllib.request.urlopen(req) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
