"""create_pipeline(): the component graph of the production path (TFX_NOTES §3).

CsvExampleGen (or ImportExampleGen for tf.Example TFRecords) -> StatisticsGen -> ImportSchemaGen -> ExampleValidator
-> AnomaliesGate -> Transform -> Trainer -> Resolver (latest blessed model) -> Evaluator -> Pusher (only if blessed).

With `warm_start=True` the Resolver's model is also the Trainer's `base_model`: the Trainer continues from the
latest blessed model (weights, optimizer slots, embedding rows remapped by id; `tfx_pipeline.models.model`) and the
Evaluator compares the candidate with that same model.

With `add_scenario=NAME` (onboarding) there is no Transform: the Trainer reads the raw examples, appends one scenario
token to the latest blessed MDL model and trains it on NAME's rows with that model's own Transform graph, so the
outputs of every row whose membership does not include NAME stay bit-identical (`tfx_pipeline.models.onboarding`);
the pushed model's feature config lists NAME after the existing scenarios.
"""
from __future__ import annotations

from tfx import v1 as tfx

from mdl_tf.config import FeatureConfig
from tfx_pipeline.components.anomalies_gate import AnomaliesGate
from tfx_pipeline.pipeline import configs
from tfx_pipeline.pipeline.eval_config import eval_config

PREPROCESSING_FN = "tfx_pipeline.models.preprocessing.preprocessing_fn"
RUN_FN = "tfx_pipeline.models.model.run_fn"
SPLITS = ("train", "eval")


def example_gen(data_root: str, input_format: str):
    """CSV folders `<data_root>/{train,eval}/*.csv`, or TFRecord tf.Examples `<data_root>/{train,eval}/*.tfrecord*`."""
    if input_format == "csv":
        pattern, component = "*.csv", tfx.components.CsvExampleGen
    elif input_format == "tfrecord":
        pattern, component = "*.tfrecord*", tfx.components.ImportExampleGen
    else:
        raise ValueError(f"input_format must be 'csv' or 'tfrecord', got {input_format!r}")
    input_config = tfx.proto.Input(splits=[tfx.proto.Input.Split(name=s, pattern=f"{s}/{pattern}") for s in SPLITS])
    return component(input_base=data_root, input_config=input_config)


def create_pipeline(*, pipeline_name: str, pipeline_root: str, data_root: str, schema_file: str,
                    feature_config: FeatureConfig, serving_root: str, model: str = "mdl", hparams: dict = None,
                    train: dict = None, model_name: str = configs.MODEL_NAME, train_steps: int = configs.TRAIN_STEPS,
                    eval_steps: int | None = configs.EVAL_STEPS, auc_floor: float = configs.AUC_FLOOR,
                    max_auc_drop: float = configs.MAX_AUC_DROP, fail_on_anomalies: bool = False,
                    input_format: str = "csv", metadata_connection_config=None, beam_pipeline_args=None,
                    enable_cache: bool = True, warm_start: bool = False,
                    add_scenario: str | None = None) -> tfx.dsl.Pipeline:
    if add_scenario and (warm_start or model != "mdl"):
        raise ValueError("add_scenario onboards a token into the latest blessed MDL model: it takes model='mdl' and "
                         "no warm_start")
    cfg = feature_config
    custom = configs.custom_config(cfg, model=model, hparams=dict(hparams or {}), train=dict(train or {}),
                                   model_name=model_name)
    if warm_start:  # only then: a run without it keeps its earlier cache key
        custom["warm_start"] = True
    if add_scenario:
        cfg = configs.onboarding_config(cfg, add_scenario)
        custom = configs.custom_config(cfg, model=model, model_name=model_name,
                                       onboard={"scenario": add_scenario, **configs.onboard_settings(train)})

    gen = example_gen(data_root, input_format)
    stats = tfx.components.StatisticsGen(examples=gen.outputs["examples"])
    schema = tfx.components.ImportSchemaGen(schema_file=schema_file)
    validator = tfx.components.ExampleValidator(statistics=stats.outputs["statistics"],
                                                schema=schema.outputs["schema"])
    gate = AnomaliesGate(anomalies=validator.outputs["anomalies"], fail_on_anomalies=int(fail_on_anomalies))
    # The Transform gets only what it reads, so switching models or training settings reuses its cached output.
    resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing)).with_id("latest_blessed_model")
    if add_scenario:
        transform = None
        trainer = tfx.components.Trainer(
            run_fn=RUN_FN, examples=gen.outputs["examples"], schema=schema.outputs["schema"],
            base_model=resolver.outputs["model"], train_args=tfx.proto.TrainArgs(num_steps=train_steps),
            eval_args=tfx.proto.EvalArgs(num_steps=eval_steps), custom_config=custom)
        trainer.add_upstream_node(gate)
    else:
        transform = tfx.components.Transform(examples=gen.outputs["examples"], schema=schema.outputs["schema"],
                                             preprocessing_fn=PREPROCESSING_FN,
                                             custom_config=configs.custom_config(cfg),
                                             # StatisticsGen already profiles the raw examples; the Transform's own
                                             # TFDV passes (raw and transformed) repeat a full pass each and nothing
                                             # reads them (at 3,000 rows the saving is within noise: fixed costs).
                                             disable_statistics=True)
        transform.add_upstream_node(gate)
        trainer = tfx.components.Trainer(
            run_fn=RUN_FN, examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"], schema=schema.outputs["schema"],
            base_model=resolver.outputs["model"] if warm_start else None,
            train_args=tfx.proto.TrainArgs(num_steps=train_steps),
            eval_args=tfx.proto.EvalArgs(num_steps=eval_steps), custom_config=custom)
    evaluator = tfx.components.Evaluator(
        examples=gen.outputs["examples"], model=trainer.outputs["model"],
        baseline_model=resolver.outputs["model"], eval_config=eval_config(cfg, auc_floor, max_auc_drop))
    with tfx.dsl.Cond(evaluator.outputs["blessing"].future()[0].custom_property("blessed") == 1):
        # The Pusher writes <serving_root>/<model_name>/<unix time>/ and copies saved_model.pb last, so TF Serving
        # (and `mdl-tf serve`) never loads a half-written version.
        pusher = tfx.components.Pusher(
            model=trainer.outputs["model"],
            push_destination=tfx.proto.PushDestination(filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=f"{serving_root.rstrip('/')}/{model_name}")))
    components = [c for c in (gen, stats, schema, validator, gate, transform, trainer, resolver, evaluator, pusher)
                  if c is not None]
    return tfx.dsl.Pipeline(pipeline_name=pipeline_name, pipeline_root=pipeline_root, components=components,
                            enable_cache=enable_cache, metadata_connection_config=metadata_connection_config,
                            beam_pipeline_args=list(beam_pipeline_args or []))
