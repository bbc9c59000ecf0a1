//! Integration tests for the workspace, in `tests/`: they talk to the real broker at `AMQP_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`), use unique names and clean up.
