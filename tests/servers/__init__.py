"""Real S3 and GCS servers on loopback, for tests that go through TensorStore.

Modules: `fixtures` (pytest fixtures, the entry point), `s3` / `gcs` (the servers),
`store` (a test's prefix in a server's bucket), and the launchers that run inside the
server subprocesses (`moto_launcher`, `gcs_launcher` with `gcs_handlers`,
`gcs_preconditions`, `gcs_writes`; `s3_snapshot`) with what they share in `launcher`.

Deliberately re-exports nothing: every server start imports this package in a fresh
subprocess, which should not pay for importing TensorStore.
"""
