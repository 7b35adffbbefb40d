"""`mdl-tf serve`, `mdl-tf predict` and `mdl-tf bench serving`."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("mdl_tf.predict")


def cmd_serve(args) -> None:
    from mdl_tf.serving.server import serve_forever

    serve_forever(args.model_base_path, args.model_name, host=args.host, port=args.port,
                  poll_seconds=args.poll_seconds, max_batch=args.max_batch_size,
                  max_message_bytes=int(args.max_request_mb * (1 << 20)), max_workers=args.workers)


def read_jsonl(path) -> tuple:
    """(rows, line numbers) of a JSON-lines file of raw-feature objects; a bad line is a CLIError naming it."""
    from mdl_tf.cli import CLIError

    rows, lines = [], []
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CLIError(f"{path}: line {n} is not valid JSON ({e.msg}); one JSON object per line") from None
                if not isinstance(row, dict):
                    raise CLIError(f"{path}: line {n} is a JSON {type(row).__name__}; expected an object of raw "
                                   f"features")
                rows.append(row)
                lines.append(n)
    except UnicodeDecodeError as e:
        raise CLIError(f"{path}: not UTF-8 text (byte {e.start}); JSON lines are UTF-8") from None
    except OSError as e:
        raise CLIError(f"{path}: cannot read the input ({e.strerror}); --input is a JSON-lines file") from None
    if not rows:
        raise CLIError(f"{path}: no rows; one JSON object of raw features per line")
    return rows, lines


def kept_fields(rows: list, lines: list, keep: list, path) -> list:
    """The `--keep` fields of every row ([{field: value}], in `keep`'s order); a row without one is a CLIError naming
    the file, line and field."""
    from mdl_tf.cli import CLIError
    from mdl_tf.values import closest_features, did_you_mean

    for row, n in zip(rows, lines):
        missing = [k for k in keep if k not in row][:1]
        if missing:
            hint = did_you_mean(missing, closest_features(missing, list(row), {}))
            raise CLIError(f"{path}: line {n} has no '{missing[0]}'{hint} (--keep copies it into every output line); "
                           f"add it to every row or leave it out of --keep")
    return [{k: row[k] for k in keep} for row in rows]


def refuse_output_names(keep: list, outputs) -> None:
    """CLIError for `--keep` fields named like a model output (the output line would hold the name twice)."""
    from mdl_tf.cli import CLIError

    clash = [k for k in keep if k in outputs]
    if clash:
        raise CLIError(f"--keep {','.join(clash)}: the model's outputs have that name; keep another field")


def pass_through(rows: list, lines: list, keep: list, cfg, path) -> list:
    """The rows without the `--keep` fields the feature config does not declare (they are copied, not sent).

    A kept field that looks like a misspelt feature no row holds ('itme_id' in a file without 'item_id') gets a
    warning, as every row is then scored without that feature; it is not refused, since a pass-through field may
    legitimately resemble an optional feature (device_id beside device)."""
    from mdl_tf import values
    from mdl_tf.export import output_name

    rules = values.column_rules(cfg)
    refuse_output_names(keep, [output_name(t) for t in cfg.task_names])
    copied = [k for k in keep if k not in rules]
    held = set().union(*rows)
    for name, feature in values.closest_features(copied, values.served_features(rules), held).items():
        log.warning("%s: the rows have '%s' and no row has '%s': --keep copies '%s' and does not send it, so every "
                    "row is scored without '%s'; if it is a misspelling, rename the field in the input", path, name,
                    feature, name, feature)
    return [{k: v for k, v in row.items() if k not in copied} for row in rows]


def cmd_predict(args) -> None:
    """Score a JSON-lines file: every row is checked against the model's features first (a bad value stops with the
    file, line and feature, exit code 2, nothing written), then sent in batches. `--keep` fields (a request id, the
    user and item) are copied from each row into its output line; those the feature config does not declare are not
    sent to the model."""
    from mdl_tf import config as cfgmod
    from mdl_tf.cli import CLIError, comma_list
    from mdl_tf.errors import UnknownFeatures
    from mdl_tf.serving.client import ServingClient, ServingError

    rows, lines = read_jsonl(args.input)
    keep = comma_list(args.keep)
    if args.keep is not None and not keep:
        raise CLIError(f"--keep {args.keep!r}: no field given; e.g. --keep request_id,user_id")
    kept = kept_fields(rows, lines, keep, args.input) if keep else [{}] * len(rows)
    cfg = cfgmod.load(args.schema) if args.schema else None
    out_lines = []
    with ServingClient(args.server, args.model_name, signature=args.signature, timeout=args.timeout,
                       feature_config=cfg) as client:
        try:
            if keep:  # pass-through fields are not features: the row check would refuse them as unknown
                rows = pass_through(rows, lines, keep, client.feature_config(), args.input)
            try:
                examples = client.examples(rows, [f"{args.input}: line {n}" for n in lines])
            except UnknownFeatures as e:
                carry = [k for k in e.names if k not in e.guesses]
                raise CLIError(f"{e}" + (f"; to copy a field that is not a feature into the output, pass --keep "
                                         f"{','.join(keep + carry)}" if carry else "")) from None
            for start in range(0, len(examples), args.batch_size):
                outputs = client.predict_examples(examples[start:start + args.batch_size])
                refuse_output_names(keep, outputs)  # another signature's outputs may differ from the config's
                count = len(next(iter(outputs.values())))
                out_lines += [json.dumps({**kept[start + i], **{k: float(v[i]) for k, v in sorted(outputs.items())}})
                              for i in range(count)]
        except ServingError as e:
            raise CLIError(f"{args.server} model '{args.model_name}': {e}") from None
    text = "\n".join(out_lines) + "\n"
    if args.output:
        from mdl_tf.utils import atomic_write_text

        atomic_write_text(Path(args.output), text)
        print(f"wrote {len(out_lines)} predictions to {args.output}")
    else:
        print(text, end="")


def cmd_bench_serving(args) -> None:
    from mdl_tf.bench.serving import run_serving_bench
    from mdl_tf.cli import _print

    _print(run_serving_bench(args.model_base_path, args.model_name, args.out, data=args.data,
                             iterations=args.iterations, load_requests=args.load_requests,
                             concurrency=args.concurrency))


def add_serving_parsers(sub, bench) -> None:
    from mdl_tf.cli import port_number, positive_float, positive_int

    p = sub.add_parser("serve", help="development gRPC server with TF Serving's API (production: TF Serving)")
    p.add_argument("--model-base-path", required=True, help="<base>/<version>/saved_model.pb, as the Pusher writes")
    p.add_argument("--model-name", required=True)
    p.add_argument("--port", type=port_number, default=8500)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--poll-seconds", type=positive_float, default=2.0, help="how often to look for a new version")
    p.add_argument("--max-batch-size", type=positive_int, default=8192)
    p.add_argument("--max-request-mb", type=positive_float, default=64.0)
    p.add_argument("--workers", type=positive_int, default=min(32, (os.cpu_count() or 2) * 4), help="gRPC threads")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("predict", help="score JSON lines of raw features through a TF Serving gRPC endpoint")
    p.add_argument("--server", required=True, help="HOST:PORT")
    p.add_argument("--model-name", required=True)
    p.add_argument("--input", required=True, help="rows.jsonl: one JSON object of raw features per line")
    p.add_argument("--output", help="out.jsonl (default: stdout)")
    p.add_argument("--schema", help="features.yaml folder (needed with TF Serving; `mdl-tf serve` publishes it)")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--timeout", type=positive_float, default=10.0, help="deadline per request in seconds")
    p.add_argument("--keep", metavar="FIELDS", help="comma-separated fields of each input row copied to the front of "
                   "its output line (e.g. request_id,user_id,item_id), to join predictions back; fields that are not "
                   "features are not sent to the model; a row without one stops the command")
    p.set_defaults(func=cmd_predict)

    p = bench.add_parser("serving", help="latency and throughput in-process and over gRPC at batch 1, 64, 512")
    p.add_argument("--model-base-path", required=True)
    p.add_argument("--model-name", default="mdl")
    p.add_argument("--data", help="dataset folder whose test rows are sent (default: rows from the vocabularies)")
    p.add_argument("--out", default="benchmarks/results/serving")
    p.add_argument("--iterations", type=positive_int, default=200, help="timed calls per batch size")
    p.add_argument("--load-requests", type=positive_int, default=20000)
    p.add_argument("--concurrency", type=positive_int, default=16)
    p.set_defaults(func=cmd_bench_serving)
