"""An MDL model with scenario and task tokens appended after training (issue 18: onboarding).

`OnboardedMDL` wraps a trained (frozen) `MDLModel` — the *base* — and one `AppendedToken` per onboarding step. An
appended token has every per-token weight a token of its stream has, as its own one-token slice:

    scenario token k' (Eq. 4, 8, 11-12):  ê_spec^{k'} row, FFN_{k'} of the tokenizer, W_Q^{(k')} (and W_O) of DAA_s in
                                         every block, PFFN_s slice in every block that has one
    task token n'     (Eq. 7, 13-16):     ê_task^{n'} row, FFN_{n'}, W_Q / W_O of DAA_t and PFFN_t in every block,
                                         Head_{n'}

while the shared parts of its stream (ê_imp tables, the token LayerNorm, the query LayerNorm, K and V of the feature
tokens) are the base's. Scenario tokens never attend to each other and task tokens never either (MDL_SPEC §4.3), so
an appended token only changes:

* the fusion s̄ (Eq. 9) of rows that belong to the new scenario:
  s̄ = (Σ_k M_k Ŝ_k + Ŝ_g + M_{k'} Ŝ_{k'}) / (Σ_k M_k + 1 + M_{k'}); every other row keeps the base's s̄ tensor,
  selected with `tf.where` (an exact copy, not a recomputation);
* one more logit column (a task token).

The base model's forward pass runs op for op as before (the same layers, shapes and inputs; the onboarded tokens
only read its intermediate tensors), so every existing scenario and task is bit-identical to the base model. Each
onboarding step is computed in its own one-token einsums, so a later step never changes the shapes of an earlier
one's computation either.
"""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.data.transform import SCENARIO_MASK
from mdl_tf.layers.embedding import SparseEmbedding
from mdl_tf.layers.per_token import PerTokenDense, PerTokenFFN
from mdl_tf.models.base import MultiDistributionModel, dummy_features

KINDS = ("scenario", "task")


def copy_slice(source, target, index: int) -> None:
    """Copy token `index`'s weights of a per-token layer (PerTokenDense / PerTokenFFN, [N, ...] weights) into the
    one-token layer `target` ([1, ...] weights). Raises ValueError if the two layers do not match."""
    src = {w.name.split("/")[-1].split(":")[0] + str(i): w for i, w in enumerate(source.weights)}
    dst = {w.name.split("/")[-1].split(":")[0] + str(i): w for i, w in enumerate(target.weights)}
    if list(src) != list(dst):
        raise ValueError(f"cannot copy a token slice from {source.name} {list(src)} into {target.name} {list(dst)}")
    for key, w in dst.items():
        w.assign(src[key][index:index + 1])


def stream_layers(model, kind: str) -> list:
    """The per-token layers of an MDLModel's scenario or task stream, in a fixed order; axis 0 of each of their weights
    is the token (rows 0..N-1 the domains, then the global scenario token where the stream has one): the ê_spec table,
    the tokenizer's FFN_k (Eq. 4/7), per block W_Q (and W_O) of its DAA (Eq. 11/13) and its PFFN when the block has
    one (Eq. 12/15), and for tasks the heads (Eq. 16)."""
    tok = model.scenario_tokenizer if kind == "scenario" else model.task_tokenizer
    out = [tok.spec_embedding, tok.ffn]
    for block in model.blocks:
        attn = block.attn_s if kind == "scenario" else block.attn_t
        out.append(attn.query)
        if attn.output_projection:
            out.append(attn.out)
        ffn = block.ffn_s if kind == "scenario" else block.ffn_t
        if ffn is not None:
            out.append(ffn)
    return out + ([model.heads.proj] if kind == "task" else [])


class AppendedToken(tf.keras.layers.Layer):
    """One onboarded domain token: its own slice of every per-token weight of its stream (module docstring).

    kind "scenario" or "task"; `base` the trained MDLModel whose stream it joins (read for shapes and flags only;
    the base's layers are not tracked here). Shapes: `initial(features)` -> [B, 1, d]; `attend(l, block, token,
    kv)` -> Ŝ / T̂ [B, 1, d] (Eq. 11 / 13); `ffn(l, x)` -> PFFN(x) + x [B, 1, d]; `logit(token)` -> [B] (tasks).
    """

    def __init__(self, kind: str, base, **kwargs):
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        tok = base.scenario_tokenizer if kind == "scenario" else base.task_tokenizer
        hp = base.hparams
        d = int(hp["d_model"])
        hidden = int(hp.get("domain_ffn_multiplier") or hp["ffn_multiplier"]) * d
        self.d_model = d
        self.spec = SparseEmbedding(1, tok.spec_dim, name="spec_embedding")
        self.init_ffn = PerTokenFFN(hidden, output_dim=d, num_layers=tok.ffn_layers, name="init_ffn")
        self.queries, self.outputs, self.ffns = [], [], []
        self.ffn_layers = []  # block index -> position in self.ffns (None: that block has no FFN on this stream)
        for layer, block in enumerate(base.blocks):
            attn = block.attn_s if kind == "scenario" else block.attn_t
            self.queries.append(PerTokenDense(d, use_bias=attn.use_bias, name=f"query_{layer}"))
            if attn.output_projection:
                self.outputs.append(PerTokenDense(d, use_bias=attn.use_bias, name=f"output_{layer}"))
            has_ffn = (block.ffn_s if kind == "scenario" else block.ffn_t) is not None
            self.ffn_layers.append(len(self.ffns) if has_ffn else None)
            if has_ffn:
                self.ffns.append(PerTokenFFN(hidden, name=f"ffn_{layer}"))
        self.head = None
        if kind == "task":
            heads = base.heads
            self.head = (PerTokenDense(1, kernel_init=heads.init, name="head") if heads.kind == "linear"
                         else PerTokenFFN(d, output_dim=1, outer_init=heads.init, name="head"))

    def build_and_copy(self, base, index: int, spec_value) -> None:
        """Create the weights and set every slice to base token `index`'s (N_s: the global scenario token);
        `spec_value` [spec_dim] is the ê_spec input that token reads."""
        with tf.name_scope(self.name):  # distinct variable names per appended token
            self._build_and_copy(base, index, spec_value)
        self.built = True

    def _build_and_copy(self, base, index: int, spec_value) -> None:
        tok = base.scenario_tokenizer if self.kind == "scenario" else base.task_tokenizer
        d_in = int(tok.ffn.first.kernel.shape[1])
        token = tf.zeros([1, 1, self.d_model])
        self.spec(tf.range(1))
        self.spec.embeddings.assign(tf.reshape(tf.cast(spec_value, self.spec.embeddings.dtype), [1, -1]))
        self.init_ffn(tf.zeros([1, 1, d_in]))
        for layer in self.token_layers()[2:]:  # W_Q, W_O, PFFN per block, then the head: all read a [1, 1, d] token
            layer(token)
        for source, target in zip(stream_layers(base, self.kind)[1:], self.token_layers()[1:]):
            copy_slice(source, target, index)

    def token_layers(self) -> list:
        """This token's layers in `stream_layers` order: ê_spec row, FFN, per block W_Q, W_O, PFFN, the head."""
        out = [self.spec, self.init_ffn]
        for layer, pos in enumerate(self.ffn_layers):
            out.append(self.queries[layer])
            if self.outputs:
                out.append(self.outputs[layer])
            if pos is not None:
                out.append(self.ffns[pos])
        return out + ([self.head] if self.head is not None else [])

    def initial(self, tokenizer, features, embedded=None):
        """t_{k'} = ReLU(FFN_{k'}(ê_imp ⊕ ê_spec^{k'})) (Eq. 4), through the base tokenizer's shared norm: [B, 1, d].
        `embedded`: the base's feature embeddings (read when the base has imp_tables="shared")."""
        imp = tokenizer.important_inputs(features, embedded)
        spec = self.spec(tf.range(1))                                                  # [1, e]
        spec = tf.broadcast_to(spec[None], [tf.shape(imp)[0], 1, spec.shape[-1]])
        return tokenizer.activate(self.init_ffn(tf.concat([imp[:, None, :], tf.cast(spec, imp.dtype)], axis=-1)))

    def attend(self, layer: int, attention, token, kv):
        """Ŝ_{k'} (or T̂_{n'}) = DAA(t, T_f') + t with this token's W_Q (and W_O) and the block's K, V: [B, 1, d]."""
        out = self.outputs[layer] if self.outputs else None
        return attention.attend(token, kv, query=self.queries[layer], output=out) + token

    def ffn(self, layer: int, x):
        """PFFN(x) + x with this token's slice; x itself in a block without that FFN (the last scenario FFN)."""
        pos = self.ffn_layers[layer]
        return x if pos is None else self.ffns[pos](x) + x

    def logit(self, token):
        """Head_{n'}(T_t^{(L)}[:, n']) (Eq. 16): [B, 1, d] -> [B] float32."""
        return tf.cast(self.head(token)[:, 0, 0], tf.float32)


class OnboardedMDL(MultiDistributionModel):
    """A trained MDLModel plus appended scenario / task tokens (module docstring): transformed features with
    `scenario_mask` [B, N_s + S'] -> logits [B, N_t + T'], the base's columns first, in onboarding order.

    feature_config: the full config (base scenarios then the onboarded ones; base tasks then the onboarded ones);
    base: the built base MDLModel (frozen here: `trainable=False`); steps: [{"kind", "name", ...}] in order.
    Only the last step's token is trainable (`trainable_step`); every earlier weight is frozen.
    """

    model_name = "mdl"

    def __init__(self, feature_config, base, steps: list, **kwargs):
        super().__init__(feature_config, base.vocab_sizes, **kwargs)
        self.base = base
        self.hparams = dict(base.hparams)
        self.steps = [dict(s) for s in steps]
        self.appended = [AppendedToken(s["kind"], base, name=f"{s['kind']}_{s['name']}") for s in self.steps]
        self.num_base_scenarios, self.num_base_tasks = base.cfg.num_scenarios, base.cfg.num_tasks
        expected = (self.num_base_scenarios + sum(s["kind"] == "scenario" for s in steps),
                    self.num_base_tasks + sum(s["kind"] == "task" for s in steps))
        if (self.cfg.num_scenarios, self.cfg.num_tasks) != expected:
            raise ValueError(f"feature config has {self.cfg.num_scenarios} scenarios and {self.cfg.num_tasks} tasks; "
                             f"the base model and the onboarding steps give {expected}")
        base.trainable = False

    def freeze_all_but_last(self) -> None:
        """Train only the last onboarded token: the base and every earlier token keep their values exactly (their
        variables are not trainable, so no optimizer ever sees them)."""
        self.base.trainable = False
        for i, token in enumerate(self.appended):
            token.trainable = i == len(self.appended) - 1

    def compute_logits(self, features, training=False):
        base = self.base
        n_s = self.num_base_scenarios
        membership = tf.cast(features[SCENARIO_MASK], base.compute_dtype)
        base_features = {**features, SCENARIO_MASK: features[SCENARIO_MASK][:, :n_s]}
        m_base = membership[:, :n_s]
        # The base's forward pass, op for op as MDLModel.tokens (MDL_SPEC §4.8), always in inference mode: the base
        # is frozen, so its domain-token dropout (if it was trained with one) must not fire while a token trains.
        embedded = base.embedder(base_features)
        t_f = base.feature_tokenizer(embedded)
        t_t = base.task_tokenizer(base_features, embedded=embedded, training=False)
        t_s = base.scenario_tokenizer(base_features, embedded=embedded, training=False)
        scen = [(i, tok) for i, tok in enumerate(self.appended) if tok.kind == "scenario"]
        task = [(i, tok) for i, tok in enumerate(self.appended) if tok.kind == "task"]
        # Each onboarded token is its own stream: a loop over onboarding steps (model versions), each in its own
        # one-token einsums, so adding a step never changes the shapes an earlier step computes with.
        extra = {i: tok.initial(base.scenario_tokenizer if tok.kind == "scenario" else base.task_tokenizer,
                                base_features, embedded) for i, tok in enumerate(self.appended)}
        for layer, block in enumerate(base.blocks):
            state = block.prompt(t_f, t_s, t_t)
            s_bar = block.fusion(state["s_hat"], m_base)                                # the base's s̄, unchanged
            if scen:
                total, count = block.fusion.sum_and_count(state["s_hat"], m_base)
                for column, (i, tok) in enumerate(scen, start=n_s):
                    s_hat = tok.attend(layer, block.attn_s, extra[i], state["kv_s"])     # [B, 1, d]
                    member = membership[:, column:column + 1]                            # [B, 1]
                    total, count = total + member * s_hat[:, 0], count + member
                    s_bar = tf.where(member > 0, total / count, s_bar)                   # only the new rows change
                    extra[i] = tok.ffn(layer, s_hat)
            kv_t = block.task_kv(state) if task else None
            for i, tok in task:
                t_tilde = tok.attend(layer, block.attn_t, extra[i], kv_t) + s_bar[:, None, :]
                extra[i] = tok.ffn(layer, t_tilde)
            t_f, t_s, t_t = block.update(state, m_base, s_bar=s_bar, training=False)
        logits = base.heads(t_t)
        if not task:
            return logits
        return tf.concat([logits, tf.stack([tok.logit(extra[i]) for i, tok in task], axis=1)], axis=1)

    def build_with_dummy_batch(self) -> "OnboardedMDL":
        self(dummy_features(self.cfg), training=False)
        return self


def check_onboardable(base) -> None:
    """Raise ValueError unless `base` is an MDLModel whose streams an appended token can join exactly: scenario and
    task tokens, the global token, attention prompts and the pre-FFN fusion (MDL's defaults)."""
    hp = getattr(base, "hparams", {})
    needed = {"use_scenario_tokens": True, "use_task_tokens": True, "use_global_token": True,
              "scenario_interaction": "attention", "task_interaction": "attention", "fuse_state": "pre_ffn"}
    wrong = {k: hp.get(k) for k, v in needed.items() if hp.get(k) != v}
    if hp.get("domain_ffn_prenorm"):  # an appended token runs its own FFN sublayers, without the stream's norms
        wrong["domain_ffn_prenorm"] = True
    if hp.get("head_input", "task_token") != "task_token":  # an appended task's head reads its token alone
        wrong["head_input"] = hp["head_input"]
    if any(getattr(base, "priors", {}).values()):  # an appended token would have no priors to read
        wrong["priors"] = "declared (prior_for in features.yaml)"
    if getattr(base, "model_name", None) != "mdl" or wrong:
        raise ValueError(f"only an MDL model with scenario tokens, task tokens, the global token, attention prompts, "
                         f"fuse_state=pre_ffn, no domain_ffn_prenorm, head_input=task_token and no priors can be "
                         f"onboarded; this one has {wrong or base.model_name}")


def fold(model: OnboardedMDL, precision: str = "float32"):
    """A regular MDLModel over `model.cfg` (the base's scenarios then the onboarded ones, likewise tasks) holding
    `model`'s weights: each appended token becomes its domain's row of every per-token weight (`stream_layers`),
    inserted after the base's domains and before the global scenario token; every other weight is the base's. This
    is how a model onboarded in the pipeline is carried into the next warm-started run, whose feature config lists
    the onboarded names last (`warm_start`). The folded model computes `model`'s outputs up to float rounding.

    One re-parameterisation keeps that exact with global_input="mean_spec" (MDL's default), where the global token
    reads the mean ê_spec of *all* scenario rows: an onboarded scenario's ê_spec row is set back to the base rows'
    mean m (where it started, so the global token's input is unchanged) and what the row learnt moves into the bias
    of its first FFN layer, which is where ê_spec enters (Eq. 4): b_k += W_spec,k (ê_spec^k - m), a constant per token.
    Raises ValueError if a weight does not fit (a model that is not what `make_onboarded` builds)."""
    from mdl_tf.models import build_model

    base = model.base
    folded = build_model("mdl", model.cfg, base.vocab_sizes, precision=precision, **base.hparams)
    folded.build_with_dummy_batch()
    done = set()
    for kind in KINDS:
        at = base.cfg.num_scenarios if kind == "scenario" else base.cfg.num_tasks
        tokens = [t.token_layers() for t in model.appended if t.kind == kind]
        for source, target, *appended in zip(stream_layers(base, kind), stream_layers(folded, kind), *tokens):
            for i, w in enumerate(target.weights):
                rows = [source.weights[i][:at], *(a.weights[i] for a in appended), source.weights[i][at:]]
                value = tf.concat([tf.cast(r, w.dtype) for r in rows], axis=0)
                if value.shape != w.shape:
                    raise ValueError(f"fold: {w.name} has shape {w.shape}; the base's and appended rows give "
                                     f"{value.shape}")
                w.assign(value)
                done.add(w.ref())
    own, theirs = folded.model_weights(), base.model_weights()
    if len(own) != len(theirs):
        raise ValueError(f"fold: the folded model has {len(own)} weights, the base {len(theirs)}")
    for w, b in zip(own, theirs):
        if w.ref() in done:
            continue
        if w.shape != b.shape:
            raise ValueError(f"fold: {w.name} has shape {w.shape} and the base's {b.name} {b.shape}")
        w.assign(b)
    tok = folded.scenario_tokenizer
    new_rows = slice(base.cfg.num_scenarios, folded.cfg.num_scenarios)
    if tok.global_token and tok.global_input == "mean_spec" and new_rows.stop > new_rows.start:
        first = tok.ffn.first
        if first.bias is None:
            raise ValueError("fold: the scenario tokenizer's first FFN layer has no bias to take the ê_spec rows")
        spec = tok.spec_embedding.embeddings
        mean = tf.reduce_mean(spec[:base.cfg.num_scenarios], axis=0)                   # [e]: the global's input
        kernel = first.kernel[new_rows, -tok.spec_dim:, :]                            # [S', e, h]: W_spec
        shift = tf.einsum("se,seh->sh", spec[new_rows] - mean, kernel)
        first.bias.assign(tf.tensor_scatter_nd_add(first.bias, _rows(new_rows), shift))
        spec.assign(tf.tensor_scatter_nd_update(spec, _rows(new_rows), tf.repeat(mean[None], shift.shape[0], 0)))
    return folded


def _rows(rows: slice):
    return tf.range(rows.start, rows.stop)[:, None]
