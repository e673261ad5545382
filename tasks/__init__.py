"""tlpipe's plain, Prefect-free functions: one module per pipeline step."""
