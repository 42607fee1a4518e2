"""The programs that run on hosts, with nothing but the host's python3 (3.10 and newer) and the standard library.

Each program's one contract: `python3 -m cnhost.<program> <mode> --<option> <value> ...` prints one JSON line
(the last line of its output) and exits with the code its EXIT table names. The controller imports them
(`from cnhost import uploader`); both engines and pull-mode bundles ship this package to the hosts.

- `model_sync`: the model layer's repository sync; `model_serve`: the inference layer's served version;
  `triton_endpoint`: where a client reaches the host's Triton (the one builder of its URLs).
- `capture`, `pipeline_run`, `client_adapter`, `uploader`, `bucket_worker`: the pipeline layer's services.
- `health_report`: the verify layer's report.
"""
