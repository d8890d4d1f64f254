"""A real S3 server (moto) on loopback, for TensorStore's ``s3`` kvstore driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servers.bucket_server import BucketServer
from servers.loopback import TENSORSTORE_RETRIES, http_request
from servers.process import ServerStartError

# moto accepts any credentials; TensorStore's "environment" provider only needs them set.
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "jaxpoint-test", "AWS_SECRET_ACCESS_KEY": "jaxpoint-test"}


class S3Server(BucketServer):
    """moto's S3 on a fixed loopback port, with one bucket created at first start.

    Every acknowledged write survives `restart()` (see `servers.s3_snapshot`); only
    what was in flight at the moment of the restart may be lost, as on real S3.
    """

    region = "us-east-1"

    def __init__(self, *, workdir: Path, bucket: str = "jaxpoint-test", port: int | None = None):
        if len(bucket) < 3:
            raise ValueError(f"Expected an S3 bucket name of 3+ characters, got {bucket!r}.")
        super().__init__(
            name="moto S3 server", module="servers.moto_launcher", port=port, bucket=bucket,
            args=["--snapshot", str(workdir / "s3-snapshot.pickle")], log_path=workdir / "moto.log")

    def environ(self) -> dict[str, str]:
        """Environment variables TensorStore reads (at each request) to sign S3 requests."""
        return dict(_CREDENTIALS)

    def kvstore_spec(self, path: str = "") -> dict[str, Any]:
        """TensorStore spec for `path` in the bucket.

        `endpoint` is required because TensorStore ignores ``AWS_ENDPOINT_URL``;
        `use_conditional_write` because TensorStore only sends ``If-Match`` /
        ``If-None-Match`` on PUT to amazonaws.com endpoints by default, and falls back
        to a racy HEAD-then-PUT elsewhere. Retries are paced for quick local restarts.
        """
        return {
            "driver": "s3",
            "bucket": self.bucket,
            "path": path,
            "endpoint": self.endpoint,
            "aws_region": self.region,
            "aws_credentials": {"type": "environment"},
            "use_conditional_write": True,
            "s3_request_retries": dict(TENSORSTORE_RETRIES),
        }

    def url(self, path: str = "") -> str:
        return f"s3://{self.bucket}/{path}"




    def create_bucket(self, name: str) -> None:
        """Creates bucket `name` if missing (moto does not check signatures)."""
        reply = http_request("PUT", f"{self.endpoint}/{name}")
        if reply.status not in (200, 409):
            raise ServerStartError(
                f"Expected moto to create bucket {name!r}, got HTTP {reply.status}: "
                f"{reply.body[:500]!r}"
            )

