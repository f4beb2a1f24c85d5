"""baatt as the self-attention of diffusers' video transformers (Wan 2.1, CogVideoX).

    import baatt.diffusers as bd
    pipe = WanPipeline.from_pretrained(...)                       # or the transformer alone
    handle = bd.install(pipe, bd.Config(keep=0.25, dense_steps=4, reuse_every=2))
    video = pipe(prompt).frames
    print(handle.report())                                         # baatt calls, fallbacks by reason, ...
    handle.remove()                                                # the original processors again

install() replaces the attention processor of every WanAttention (Wan 2.1's attn1 and attn2) and
every CogVideoX Attention with one that computes what diffusers' own processor computes (projections,
q/k norm, rotary embedding, output projection) but sends the attention itself to baatt. Where baatt
cannot serve (cross-attention, an attention mask, head_dim other than 64/128, a dtype baatt lacks, a
short sequence, baatt raising a device error) the call goes to torch's SDPA (the original processor
where nothing was computed yet) and the reason is counted. torch and diffusers are imported lazily:
`pip install baatt[diffusers]`. docs/diffusers.md has the details.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Tuple

from ._api import Error, Plan, Snapshot, Status

HEAD_DIMS = (64, 128)

# baatt statuses that mean "cannot serve this call" (SDPA takes it, counted under the reason);
# any other status (a bad argument) is a bug here and is raised.
_UNSUPPORTED = {Status.UNSUPPORTED_DTYPE, Status.UNSUPPORTED_HEAD_DIM, Status.UNSUPPORTED_BLOCK_SIZE,
                Status.TOO_LARGE}


@dataclass
class Config:
    """The knobs of the baatt processors (install()).

    keep: fraction of key blocks each query block attends to (BA-Att's keep ratio), in (0, 1].
    threshold: instead of keep, the fewest blocks whose estimated attention mass reaches this, in (0, 1].
    block: tokens per block: 32, 64 or 128.
    sort: "auto" (default: per kv head, the better of the next two on 64 sampled exact rows), "norm"
        (blocks of norm-sorted tokens) or "off" (original order).
    covariance: "auto" (default: per kv head, the block logit with or without its covariance term,
        whichever recalls more on the same sampled rows), "on" or "off" (baatt.attention).
    dense_steps: the first k denoising steps of each run attend densely (SDPA): early steps set the
        layout of the video and are the most sensitive.
    dense_layers: layer indices (the block number in the transformer) that always attend densely.
    reuse_every: R; each layer estimates its selection every R-th step and attends on the held one in
        between (1: estimate every step).
    selection_store: where a held selection lives. "device" (default): one baatt plan per shape
        shared by all layers, each layer's selection kept as a device snapshot (Plan.snapshot(), a
        few MiB each) and loaded GPU to GPU before a reusing call; "host": the same plans, each
        layer's selection read back to host memory and set (checked and uploaded) before a reusing
        call; "plan": one plan per layer and CFG branch that keeps its selection (no copies, one
        plan's scratch_bytes per layer and branch).
    min_tokens: sequences shorter than this go to SDPA (below a few thousand tokens sparsity saves little).
    reset_on_timestep_increase: a forward whose timestep is larger than the previous one starts a new
        run (a new pipe() call: samplers count timesteps down): step 0 again, held selections dropped.
    device: the baatt device (index or name substring; None: baatt's default).
    """
    keep: float = 0.5
    threshold: Optional[float] = None
    block: int = 64
    sort: str = "auto"
    covariance: str = "auto"
    dense_steps: int = 0
    dense_layers: FrozenSet[int] = field(default_factory=frozenset)
    reuse_every: int = 1
    selection_store: str = "device"
    min_tokens: int = 2048
    reset_on_timestep_increase: bool = True
    device: Any = None

    def __post_init__(self) -> None:
        self.dense_layers = frozenset(int(i) for i in self.dense_layers)
        checks = [(0 < self.keep <= 1, f"keep {self.keep}: must be in (0, 1]"),
                  (self.threshold is None or 0 < self.threshold <= 1, f"threshold {self.threshold}: must be in (0, 1]"),
                  (self.block in (32, 64, 128), f"block {self.block}: must be 32, 64 or 128"),
                  (self.sort in ("norm", "off", "auto"), f"sort {self.sort!r}: must be 'norm', 'off' or 'auto'"),
                  (self.covariance in ("on", "off", "auto"),
                   f"covariance {self.covariance!r}: must be 'on', 'off' or 'auto'"),
                  (self.dense_steps >= 0, f"dense_steps {self.dense_steps}: must be >= 0"),
                  (self.reuse_every >= 1, f"reuse_every {self.reuse_every}: must be >= 1"),
                  (self.selection_store in ("device", "host", "plan"),
                   f"selection_store {self.selection_store!r}: must be 'device', 'host' or 'plan'"),
                  (self.min_tokens >= 0, f"min_tokens {self.min_tokens}: must be >= 0")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"baatt.diffusers.Config: {message}")


# ------------------------------------------------------------------------------------------------
# the engine: step counting, the dense / sparse / reuse decision, plans and held selections

class _Engine:
    """State shared by every processor of one install(): the step, the counts, plans, selections."""

    def __init__(self, config: Config):
        self.config = config
        self.step, self.branch, self.forwards, self.runs = 0, 0, 0, 0
        self._last_t: Optional[float] = None
        self.counts: Counter = Counter()
        self.fallbacks: Counter = Counter()
        self.by_layer: Dict[int, Counter] = {}
        self._plans: Dict[Any, Plan] = {}
        # (layer, branch) -> (shape, held): held is a Snapshot ("device"), (mask, perm_q, perm_k) on
        # the host ("host"), or None where the layer's own plan holds it ("plan")
        self._held: Dict[Any, Tuple[Any, Any]] = {}
        self._estimated_at: Dict[Any, int] = {}

    # -- steps ---------------------------------------------------------------------------------
    def on_forward(self, timestep: Optional[float]) -> None:
        """A transformer forward begins. A forward with the previous forward's timestep is another
        branch of the same step (Wan's pipeline runs CFG's conditional and unconditional passes as
        two forwards); a new timestep (or an unknown one) is a new step."""
        first = self.forwards == 0
        self.forwards += 1
        if first:
            self.runs = 1
        elif timestep is not None and timestep == self._last_t:
            self.branch += 1
        elif (timestep is not None and self._last_t is not None and timestep > self._last_t
              and self.config.reset_on_timestep_increase):
            self.new_run()
        else:
            self.step, self.branch = self.step + 1, 0
        self._last_t = timestep

    def new_run(self) -> None:
        self.step, self.branch = 0, 0
        self.runs += 1
        self._drop_held()
        self._estimated_at.clear()

    # -- counting ------------------------------------------------------------------------------
    def count(self, layer: Optional[int], what: str) -> None:
        self.counts[what] += 1
        self.by_layer.setdefault(-1 if layer is None else layer, Counter())[what] += 1

    def fallback(self, layer: Optional[int], reason: str) -> None:
        self.fallbacks[reason] += 1
        self.count(layer, "fallback")

    # -- attention -----------------------------------------------------------------------------
    def attend(self, key: Any, layer: Optional[int], q: Any, k: Any, v: Any, layout: str) -> Any:
        """Attention of q over k, v ([B, N, H, d] for "bnhd", [B, H, N, d] for "bhnd"): SDPA for a
        dense step or layer, else baatt (SDPA, counted, where baatt raises a status it cannot serve)."""
        cfg = self.config
        if self.step < cfg.dense_steps or (layer is not None and layer in cfg.dense_layers):
            self.count(layer, "dense")
            return _sdpa(q, k, v, layout)
        try:
            o = self._sparse((key, self.branch), layer, q, k, v, layout)
        except Error as e:
            reason = _fallback_reason(e)
            if reason is None:
                raise
            self.fallback(layer, reason)
            return _sdpa(q, k, v, layout)
        self.count(layer, "baatt")
        return o

    def _sparse(self, key: Any, layer: Optional[int], q: Any, k: Any, v: Any, layout: str) -> Any:
        cfg = self.config
        shape = (tuple(q.shape), tuple(k.shape), str(q.dtype), layout)
        held = self._held.get(key)
        reuse = (cfg.reuse_every > 1 and held is not None and held[0] == shape
                 and self.step - self._estimated_at[key] < cfg.reuse_every)
        plan = self._plan(key if cfg.selection_store == "plan" else None, shape)
        if reuse and isinstance(held[1], Snapshot):   # the device store: GPU-to-GPU copies
            plan.load(held[1])
        elif reuse and held[1] is not None:   # the host store: the selection goes back to the plan
            plan.set_selection(*held[1])
        o = plan(q, k, v, reuse=reuse)
        if reuse:
            self.count(layer, "reuse")
            return o
        self.count(layer, "estimate")
        self._estimated_at[key] = self.step
        if cfg.reuse_every > 1:
            self._hold(key, (shape, self._take_selection(plan)))
        return o

    def _take_selection(self, plan: Plan) -> Any:
        """What the store keeps of the selection plan just estimated."""
        store = self.config.selection_store
        if store == "device":
            return plan.snapshot()
        if store == "host":
            sel = plan.selection()
            return sel.mask, sel.perm_q, sel.perm_k
        return None

    def _hold(self, key: Any, entry: Tuple[Any, Any]) -> None:
        old = self._held.get(key)
        if old is not None and isinstance(old[1], Snapshot):   # its device memory now, not at GC
            old[1].close()
        self._held[key] = entry

    def _drop_held(self) -> None:
        for _, held in self._held.values():
            if isinstance(held, Snapshot):
                held.close()
        self._held.clear()

    def _plan(self, key: Any, shape: Tuple[Any, ...]) -> Plan:
        """The plan of this layer and branch ("plan" store) or of this shape (shared: "device",
        "host")."""
        cache_key = (key, shape)
        plan = self._plans.get(cache_key)
        if plan is None:
            cfg = self.config
            q_shape, kv_shape, dtype, layout = shape
            plan = Plan(q_shape, kv_shape, dtype.replace("torch.", ""), keep=cfg.keep, threshold=cfg.threshold,
                        block=cfg.block, sort=cfg.sort, covariance=cfg.covariance, layout=layout, device=cfg.device)
            self._plans[cache_key] = plan
        return plan

    def plans(self) -> List[Plan]:
        return list(self._plans.values())

    def close(self) -> None:
        for p in self.plans():
            p.close()
        self._drop_held()
        self._plans.clear()
        self._estimated_at.clear()

    def report(self) -> Dict[str, Any]:
        host = sum(sum(a.nbytes for a in sel) for _, sel in self._held.values() if isinstance(sel, tuple))
        snapshots = sum(isinstance(sel, Snapshot) for _, sel in self._held.values())
        return {"forwards": self.forwards, "step": self.step, "runs": self.runs,
                "baatt": self.counts["baatt"], "estimates": self.counts["estimate"], "reuse": self.counts["reuse"],
                "dense": self.counts["dense"], "fallbacks": dict(self.fallbacks),
                "fallback_total": sum(self.fallbacks.values()),
                "by_layer": {k: dict(v) for k, v in sorted(self.by_layer.items())},
                "plans": len(self.plans()), "plan_scratch_bytes": sum(p.scratch_bytes for p in self.plans()),
                "host_selection_bytes": host, "device_snapshots": snapshots}


def _fallback_reason(e: Error) -> Optional[str]:
    if e.status in _UNSUPPORTED:
        return "unsupported"
    if e.status == Status.NONFINITE_INPUT:
        return "nonfinite_input"
    if isinstance(e.status, int) and int(e.status) >= 200:   # no Vulkan/device, device memory, device lost
        return "device_error"
    return None


def _sdpa(q: Any, k: Any, v: Any, layout: str) -> Any:
    """torch's scaled_dot_product_attention (what diffusers' native backend calls), in `layout`."""
    import torch.nn.functional as F
    if layout == "bhnd":
        return F.scaled_dot_product_attention(q, k, v)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return o.transpose(1, 2)


# ------------------------------------------------------------------------------------------------
# the processors

def _supported_dtype(dtype: Any) -> bool:
    import torch
    return dtype in (torch.float32, torch.float16, torch.bfloat16)


class _Processor:
    """What the two model processors share: the pre-projection checks and the delegation to the
    original processor when they fail (so a fallback computes exactly what diffusers computes)."""

    def __init__(self, engine: _Engine, original: Any, name: str, layer: Optional[int]):
        self.engine, self.original, self.name, self.layer = engine, original, name, layer
        # diffusers' enable_parallelism() and set_attention_backend() set these on processors that
        # declare them; a sharded sequence is then handed to the original processor
        self._parallel_config = getattr(original, "_parallel_config", None)
        self._attention_backend = getattr(original, "_attention_backend", None)

    def _precheck(self, attn: Any, x: Any, tokens: int, cross: bool, mask: Any) -> Optional[str]:
        head_dim = attn.to_q.out_features // attn.heads
        if cross:
            return "cross_attention"
        if mask is not None:
            return "mask"
        if getattr(self, "_parallel_config", None) is not None or getattr(self.original, "_parallel_config", None):
            return "context_parallel"   # the sequence is sharded: attention must gather it
        if head_dim not in HEAD_DIMS:
            return "head_dim"
        if not _supported_dtype(x.dtype):   # the activations' (layerwise casting may store fp8 weights)
            return "dtype"
        if tokens < self.engine.config.min_tokens:
            return "short_sequence"
        return None

    def _delegate(self, reason: str, *args: Any, **kwargs: Any) -> Any:
        self.engine.fallback(self.layer, reason)
        return self.original(*args, **kwargs)


class WanProcessor(_Processor):
    """WanAttention's processor (diffusers' WanAttnProcessor) with the attention through baatt.
    The signature is the original's: WanAttention.forward passes rotary_emb positionally."""

    def __call__(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, rotary_emb: Any = None) -> Any:
        cross = encoder_hidden_states is not None or attn.add_k_proj is not None
        reason = self._precheck(attn, hidden_states, hidden_states.shape[1], cross, attention_mask)
        if not reason and rotary_emb is not None and not (isinstance(rotary_emb, tuple) and len(rotary_emb) == 2):
            reason = "rotary"   # not the (cos, sin) pair this diffusers' Wan passes
        if reason:
            return self._delegate(reason, attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        if getattr(attn, "fused_projections", False):
            q, k, v = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        # RMS norm across all heads, then [B, N, H, d]
        q, k = attn.norm_q(q), attn.norm_k(k)
        q, k, v = (x.unflatten(2, (attn.heads, -1)) for x in (q, k, v))
        if rotary_emb is not None:
            q, k = _wan_rope(q, *rotary_emb), _wan_rope(k, *rotary_emb)
        o = self.engine.attend(self.name, self.layer, q, k, v, "bnhd")
        o = o.flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](o))


def _wan_rope(x: Any, freqs_cos: Any, freqs_sin: Any) -> Any:
    """Wan's rotary embedding: channel pairs (2i, 2i+1) rotated by the angle whose cosine is at the
    even and sine at the odd positions of the (repeat-interleaved) tables, computed in the tables'
    precision (float64 in diffusers) and rounded to x's dtype once."""
    import torch
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2).type_as(x)


class CogVideoXProcessor(_Processor):
    """CogVideoX's joint text+video attention (diffusers' CogVideoXAttnProcessor2_0 and its fused
    variant) with the attention through baatt: the text tokens are concatenated in front of the video
    tokens, the rotary embedding applies to the video part only, and the output is split back."""

    def __call__(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any,
                 attention_mask: Any = None, image_rotary_emb: Any = None) -> Any:
        import torch
        text = encoder_hidden_states.size(1)
        reason = self._precheck(attn, hidden_states, text + hidden_states.shape[1], attn.is_cross_attention,
                                attention_mask)
        if reason:
            return self._delegate(reason, attn, hidden_states, encoder_hidden_states, attention_mask=attention_mask,
                                  image_rotary_emb=image_rotary_emb)
        x = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        if getattr(attn, "fused_projections", False):
            q, k, v = attn.to_qkv(x).chunk(3, dim=-1)
        else:
            q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        b, d = x.shape[0], k.shape[-1] // attn.heads
        q, k, v = (t.view(b, -1, attn.heads, d).transpose(1, 2) for t in (q, k, v))   # [B, H, N, d]
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        if image_rotary_emb is not None:
            from diffusers.models.embeddings import apply_rotary_emb
            q = torch.cat([q[:, :, :text], apply_rotary_emb(q[:, :, text:], image_rotary_emb)], dim=2)
            k = torch.cat([k[:, :, :text], apply_rotary_emb(k[:, :, text:], image_rotary_emb)], dim=2)
        o = self.engine.attend(self.name, self.layer, q, k, v, "bhnd")
        o = o.transpose(1, 2).reshape(b, -1, attn.heads * d)
        o = attn.to_out[1](attn.to_out[0](o))
        encoder_out, video_out = o.split([text, o.size(1) - text], dim=1)
        return video_out, encoder_out


def _processor_class(original: Any) -> Optional[type]:
    """Our processor for a diffusers processor, None for one we do not reproduce."""
    name = type(original).__name__
    if name == "WanAttnProcessor":   # WanAttnProcessor2_0() makes one too
        return WanProcessor
    if name in ("CogVideoXAttnProcessor2_0", "FusedCogVideoXAttnProcessor2_0"):
        return CogVideoXProcessor
    return None


# ------------------------------------------------------------------------------------------------
# install / remove

class Handle:
    """What install() returns: report(), reset() and remove() (also a context manager)."""

    def __init__(self, engine: _Engine, replaced: List[Tuple[Any, Any]], hooks: List[Any], skipped: Counter):
        self._engine, self._replaced, self._hooks, self._skipped = engine, replaced, hooks, skipped
        self.config = engine.config

    def report(self) -> Dict[str, Any]:
        """Counts since install: forwards, step (of the current run), runs, baatt (attention calls
        baatt served), estimates and reuse (of those, calls that estimated a selection or attended
        on a held one), dense (SDPA calls of dense steps and layers), fallbacks {reason: count} and
        fallback_total (calls SDPA took because baatt could not serve them), by_layer {layer:
        counts} (-1: modules outside a numbered block), plans and plan_scratch_bytes (baatt plans
        alive and their device scratch), host_selection_bytes (selections held on the host),
        device_snapshots (selections held as device snapshots, a few MiB each),
        replaced (processors replaced), not_replaced {processor class: count}."""
        r = self._engine.report()
        r["replaced"] = len(self._replaced)
        r["not_replaced"] = dict(self._skipped)
        return r

    def reset(self) -> None:
        """Start a new run by hand: step 0, held selections dropped (counts are kept)."""
        self._engine.new_run()

    def remove(self) -> None:
        """Restore the original processors, remove the step hooks and free the plans."""
        for module, original in self._replaced:
            module.set_processor(original)
        for h in self._hooks:
            h.remove()
        self._replaced, self._hooks = [], []
        self._engine.close()

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def _transformers(obj: Any) -> List[Any]:
    """The transformers of a pipeline (transformer, and Wan 2.2's transformer_2), or obj itself."""
    found = [getattr(obj, n, None) for n in ("transformer", "transformer_2")]
    found = [t for t in found if t is not None]
    return found or [obj]


def _layer_index(name: str) -> Optional[int]:
    """The block number in a module path ("blocks.3.attn1", "transformer_blocks.12.attn1")."""
    m = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else None


def _timestep(module: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[float]:
    import inspect
    try:
        t = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments.get("timestep")
    except TypeError:
        return None
    if t is None:
        return None
    try:
        # the largest entry: Wan's image-to-video passes per-token timesteps whose first frame is 0
        return float(t.max()) if hasattr(t, "max") else float(t)
    except (TypeError, ValueError, IndexError):
        return None


def install(pipe_or_transformer: Any, config: Optional[Config] = None) -> Handle:
    """Replace the attention processors of a diffusers pipeline's transformer(s) (or of a
    transformer) with baatt's and return a Handle. Processors of classes not reproduced here
    are left alone and listed in report()["not_replaced"]. A forward pre-hook on each transformer
    counts the denoising steps (Engine.on_forward: CFG's second forward at the same timestep is a
    second branch of the same step, with its own held selections)."""
    config = config or Config()
    if not isinstance(config, Config):
        raise TypeError(f"config must be a baatt.diffusers.Config, not {type(config).__name__}")
    engine = _Engine(config)
    replaced: List[Tuple[Any, Any]] = []
    hooks: List[Any] = []
    skipped: Counter = Counter()
    for ti, transformer in enumerate(_transformers(pipe_or_transformer)):
        if not hasattr(transformer, "named_modules"):
            raise TypeError(f"{type(transformer).__name__} is not a torch module or a pipeline with a transformer")
        for name, module in transformer.named_modules():
            if not (hasattr(module, "get_processor") and hasattr(module, "set_processor")):
                continue
            original = module.get_processor()
            cls = _processor_class(original)
            if cls is None:
                skipped[type(original).__name__] += 1
                continue
            module.set_processor(cls(engine, original, f"{ti}.{name}", _layer_index(name)))
            replaced.append((module, original))
        hooks.append(transformer.register_forward_pre_hook(
            lambda m, a, kw: engine.on_forward(_timestep(m, a, kw)), with_kwargs=True))
    if not replaced:
        for h in hooks:
            h.remove()
        raise ValueError(f"no attention processor baatt reproduces (found {dict(skipped) or 'none'}); "
                         "baatt.diffusers serves WanTransformer3DModel and CogVideoXTransformer3DModel")
    return Handle(engine, replaced, hooks, skipped)


def processors(handle: Handle) -> Iterable[Any]:
    """The installed processors (for inspection)."""
    return [m.get_processor() for m, _ in handle._replaced]
