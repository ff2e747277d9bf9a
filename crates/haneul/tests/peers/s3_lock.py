"""The bucket owner's side of an S3 Object Lock backup, and an attacker's.

Speaks the S3 REST API directly (Signature Version 4, standard library
only), as `aws s3api` would, to a real S3-compatible server:

    s3_lock.py lock-bucket URL BUCKET DAYS
        create BUCKET with Object Lock and a default retention of DAYS in
        compliance mode; prints the lock configuration the server reports
    s3_lock.py attack URL BUCKET PREFIX SAVED
        try to destroy the first object under PREFIX: delete every version
        of it, then overwrite it; prints what the server answered and which
        versions remain, and saves the first version's bytes, read back by
        its version id, to the file SAVED
    s3_lock.py change URL BUCKET PREFIX REGEX HOW
        change the last key under PREFIX that REGEX finds: HOW "delete" is a
        plain DELETE, which in a versioned bucket puts a delete marker on top
        of the versions, "overwrite" a PUT of other bytes; prints the key,
        the server's answer and its versions

URL is http://ACCESS_KEY:SECRET@HOST:PORT. Output: one JSON line.
"""

import datetime
import hashlib
import hmac
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

REGION = "us-east-1"


def parse(url):
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}", parts.username, parts.password


def sign(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def request(url, method, path, query="", body=b"", headers=None):
    """One signed request; returns (status, body)."""
    endpoint, access_key, secret = parse(url)
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    host = urllib.parse.urlsplit(endpoint).netloc
    all_headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    all_headers.update({name.lower(): value for name, value in (headers or {}).items()})
    signed = sorted(all_headers)
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(urllib.parse.parse_qsl(query, keep_blank_values=True))
    )
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(path, safe="/-_.~"),
            canonical_query,
            "".join(f"{name}:{all_headers[name].strip()}\n" for name in signed),
            ";".join(signed),
            payload_hash,
        ]
    )
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = sign(sign(sign(sign(("AWS4" + secret).encode(), day), REGION), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    all_headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    del all_headers["host"]
    target = endpoint + urllib.parse.quote(path, safe="/-_.~") + (f"?{canonical_query}" if canonical_query else "")
    outgoing = urllib.request.Request(target, data=body if body else None, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(outgoing, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def versions(url, bucket, key):
    status, body = request(url, "GET", f"/{bucket}", f"versions=&prefix={key}")
    if status != 200:
        raise SystemExit(f"listing versions: {status} {body[:300]!r}")
    text = body.decode()
    found = []
    for kind in ("Version", "DeleteMarker"):
        for block in re.findall(rf"<{kind}>(.*?)</{kind}>", text, re.S):
            name = re.search(r"<Key>(.*?)</Key>", block).group(1)
            version = re.search(r"<VersionId>(.*?)</VersionId>", block).group(1)
            if name == key:
                found.append({"kind": kind, "version": version})
    return found


def lock_bucket(url, bucket, days):
    status, body = request(url, "PUT", f"/{bucket}", headers={"x-amz-bucket-object-lock-enabled": "true"})
    if status != 200:
        raise SystemExit(f"creating {bucket}: {status} {body[:300]!r}")
    configuration = (
        '<ObjectLockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        "<ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>"
        f"<Mode>COMPLIANCE</Mode><Days>{days}</Days></DefaultRetention></Rule></ObjectLockConfiguration>"
    ).encode()
    status, body = request(url, "PUT", f"/{bucket}", "object-lock=", configuration)
    if status != 200:
        raise SystemExit(f"locking {bucket}: {status} {body[:300]!r}")
    status, body = request(url, "GET", f"/{bucket}", "object-lock=")
    print(json.dumps({"status": status, "configuration": body.decode()}))


def current_keys(url, bucket, prefix):
    status, body = request(url, "GET", f"/{bucket}", f"list-type=2&prefix={prefix}")
    if status != 200:
        raise SystemExit(f"listing {prefix}: {status} {body[:300]!r}")
    keys = re.findall(r"<Key>(.*?)</Key>", body.decode())
    if not keys:
        raise SystemExit(f"no object under {prefix}")
    return keys


def first_key(url, bucket, prefix):
    return current_keys(url, bucket, prefix)[0]


def change(url, bucket, prefix, pattern, how):
    matching = [key for key in current_keys(url, bucket, prefix) if re.search(pattern, key)]
    if not matching:
        raise SystemExit(f"no key under {prefix} matches {pattern}")
    key = matching[-1]
    if how == "delete":
        status, _ = request(url, "DELETE", f"/{bucket}/{key}")
    elif how == "overwrite":
        status, _ = request(url, "PUT", f"/{bucket}/{key}", body=b'{"ransom": "note"}')
    else:
        raise SystemExit(f"unknown change {how}")
    print(json.dumps({"key": key, "status": status, "after": versions(url, bucket, key)}))


def attack(url, bucket, prefix, saved):
    key = first_key(url, bucket, prefix)
    before = versions(url, bucket, key)
    deletes = []
    for entry in before:
        status, _ = request(url, "DELETE", f"/{bucket}/{key}", f"versionId={entry['version']}")
        deletes.append(status)
    overwrite, _ = request(url, "PUT", f"/{bucket}/{key}", body=b"ransom note")
    after = versions(url, bucket, key)
    # The version Haneul wrote, as the bucket now serves it by version id.
    status, original = request(url, "GET", f"/{bucket}/{key}", f"versionId={before[0]['version']}") if before else (0, b"")
    with open(saved, "wb") as out:
        out.write(original)
    print(
        json.dumps(
            {"key": key, "before": before, "deletes": deletes, "overwrite": overwrite, "after": after, "original": status}
        )
    )


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "lock-bucket":
        lock_bucket(args[0], args[1], int(args[2]))
    elif command == "attack":
        attack(args[0], args[1], args[2], args[3])
    elif command == "change":
        change(args[0], args[1], args[2], args[3], args[4])
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
