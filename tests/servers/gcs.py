"""A real GCS server (patched gcp-storage-emulator) on loopback, for TensorStore's ``gcs`` driver.

TensorStore has no spec field for a GCS endpoint; it reads two environment variables:
- ``TENSORSTORE_GCS_HTTP_URL`` each time a gcs kvstore is opened, so it must be set
  before `ts.KvStore.open` / `ts.open`, and every gcs store in a process talks to the
  same server;
- ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` once, when the process first needs GCS
  credentials. If a gcs kvstore is used before it is set, TensorStore searches for
  real Google credentials instead and keeps the result for the rest of the process:
  finding none it sends unauthenticated requests (which the emulator accepts), but on
  a machine with gcloud credentials it would try to refresh them over the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from servers.bucket_server import BucketServer
from servers.loopback import TENSORSTORE_RETRIES, http_request
from servers.process import ServerStartError


class GcsServer(BucketServer):
    """The patched emulator (`servers.gcs_launcher`) on a fixed loopback port.

    Objects live on disk under `workdir`, so every acknowledged write survives
    `restart()`. The bucket is created with soft delete off, so deletes are final.
    """

    def __init__(self, *, workdir: Path, bucket: str = "jaxpoint-test", port: int | None = None):
        super().__init__(
            name="GCS emulator", module="servers.gcs_launcher", port=port, bucket=bucket,
            args=["--data-dir", str(workdir / "data")], log_path=workdir / "gcs-emulator.log")

    def environ(self) -> dict[str, str]:
        """Environment variables TensorStore needs to reach this server (see module doc)."""
        return {
            "TENSORSTORE_GCS_HTTP_URL": self.endpoint,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "jaxpoint-test",
        }

    def kvstore_spec(self, path: str = "") -> dict[str, Any]:
        """TensorStore spec for `path` in the bucket; needs `environ()` in os.environ.

        Retries are paced for quick local restarts (`servers.loopback.TENSORSTORE_RETRIES`).
        """
        return {
            "driver": "gcs",
            "bucket": self.bucket,
            "path": path,
            "gcs_request_retries": dict(TENSORSTORE_RETRIES),
        }

    def url(self, path: str = "") -> str:
        return f"gs://{self.bucket}/{path}"




    def create_bucket(self, name: str) -> None:
        """Creates bucket `name` if missing, with soft delete off."""
        created = http_request("POST", f"{self.endpoint}/storage/v1/b", json_body={"name": name})
        if created.status == 409:
            return
        # The emulator's insert ignores softDeletePolicy; only PATCH applies it.
        patched = http_request(
            "PATCH",
            f"{self.endpoint}/storage/v1/b/{quote(name, safe='')}",
            json_body={"softDeletePolicy": {"retentionDurationSeconds": "0"}},
        )
        for reply in (created, patched):
            if reply.status != 200:
                raise ServerStartError(
                    f"Expected the GCS emulator to create bucket {name!r}, got HTTP "
                    f"{reply.status}: {reply.body[:500]!r}"
                )

