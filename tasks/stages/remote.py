"""`tlpipe check-remote`: can this checkout reach its DVC remote with these credentials, and if not, why.

`dvc push` and `dvc pull` do not say which of the usual mistakes it is: DVC's first request is a HEAD,
whose 403 carries no error code, so a wrong access key, a wrong secret and a missing permission all read
"unexpected error - Forbidden: An error occurred (403) when calling the HeadObject operation", and a
`dvc pull` from a bucket that does not exist reads "Missing cache files ... Is your cache up to date?".
This lists one key under the remote's path through DVC's own filesystem (so the same url, endpointurl,
profile and credentials as push/pull, `.dvc/config.local` included) and turns the store's error code into
one line. Nothing in it is a secret: neither the secret key nor the access key id is printed.
"""
from __future__ import annotations

from pathlib import Path

FIX_URL = "dvc remote modify --local {name} url s3://<bucket>/<path>"
FIX_CREDENTIALS = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the remote's profile/credentialpath"

S3_CODES = {  # the S3 error code of a ListObjectsV2 -> what it means for the user
    "InvalidAccessKeyId": "the store does not know the access key id (wrong key: check " + FIX_CREDENTIALS + ")",
    "SignatureDoesNotMatch": "the secret key does not match the access key id (wrong secret: check "
                             + FIX_CREDENTIALS + ")",
    "InvalidToken": "the session token is invalid (check AWS_SESSION_TOKEN)",
    "ExpiredToken": "the session token has expired (renew it: AWS_SESSION_TOKEN / your SSO login)",
    "AccessDenied": "access denied: the credentials are valid but may not list {where} (the key needs "
                    "s3:ListBucket, s3:GetObject and, to push, s3:PutObject on it)",
    "AllAccessDisabled": "access to the bucket '{bucket}' is disabled",
    "NoSuchBucket": "the bucket '{bucket}' does not exist{at} (set the right one: " + FIX_URL + ")",
    "InvalidBucketName": "'{bucket}' is not a valid bucket name (set the right one: " + FIX_URL + ")",
    "PermanentRedirect": "the bucket '{bucket}' is in another region (set it: dvc remote modify --local {name} "
                         "region <region>)",
}


def check_remote(root: Path | str | None = None, name: str | None = None) -> str:
    """One line saying the remote `name` (default: the project's default remote) answers, or raise
    RuntimeError with one line saying what is wrong: credentials (which part), bucket, endpoint."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(str(root) if root else None)
    except DvcException as e:
        raise RuntimeError(f"not a DVC project: {' '.join(str(e).split())}") from None
    with repo:
        try:
            remote = repo.cloud.get_remote(name, command="check-remote")
        except DvcException as e:
            raise RuntimeError(" ".join(str(e).split())) from None
        config = (repo.config["remote"].get(remote.name) or {})
        url = config.get("url", remote.path)
        endpoint = config.get("endpointurl")
        where = f"remote '{remote.name}' ({url}{f' at {endpoint}' if endpoint else ''})"
        try:
            if remote.fs.protocol == "s3":
                bucket, _, prefix = remote.path.partition("/")
                prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
                remote.fs.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
            elif not remote.fs.exists(remote.path):
                return f"{where}: reachable, empty (nothing pushed yet)"
        except Exception as e:  # noqa: BLE001 - every failure becomes one line below
            raise RuntimeError(f"{where}: {_reason(e, remote.name, remote.path, endpoint)}") from None
        return f"{where}: reachable, the credentials are accepted"


def _reason(e: BaseException, name: str, path: str, endpoint: str | None) -> str:
    bucket = path.partition("/")[0]
    for err in (e, e.__cause__, e.__context__):
        code = ((getattr(err, "response", None) or {}).get("Error") or {}).get("Code")
        if code in S3_CODES:
            return S3_CODES[code].format(name=name, bucket=bucket, where=f"s3://{path}",
                                         at=f" at {endpoint}" if endpoint else "")
        if code:
            return f"the store answered {code}: {' '.join(str(err).split())}"
    kind = type(e).__name__
    if kind in ("NoCredentialsError", "PartialCredentialsError"):
        return f"no AWS credentials found: set {FIX_CREDENTIALS}"
    if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError") \
            or isinstance(e, (ConnectionError, TimeoutError)):
        return f"cannot reach {endpoint or 'the store'} ({' '.join(str(e).split())}); check the network " \
               f"and the endpoint: dvc remote modify --local {name} endpointurl <url>"
    return f"{kind}: {' '.join(str(e).split())}"
