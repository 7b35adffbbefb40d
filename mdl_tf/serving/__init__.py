from mdl_tf.serving.examples import row_to_example, rows_to_examples

__all__ = ["row_to_example", "rows_to_examples"]
