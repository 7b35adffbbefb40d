"""Serving: raw rows -> tf.Examples, warmup requests, the TF Serving gRPC client and a development server.

The client and server modules import gRPC and the TF Serving protos; import them directly
(`from mdl_tf.serving.client import ServingClient`)."""
from mdl_tf.serving.examples import row_to_example, rows_to_examples

__all__ = ["row_to_example", "rows_to_examples"]
