"""baatt.diffusers on the real diffusers classes (WanTransformer3DModel, CogVideoXTransformer3DModel)
with tiny seeded configs on CPU torch: keep=1.0 reproduces the SDPA processors, keep<1 stays close,
fallbacks happen where they must and are counted, dense steps/layers and selection reuse do what
the counts say, remove() restores. Skips visibly without torch or diffusers."""
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import baatt.diffusers as bd  # noqa: E402

SEED = 1234
T_STEPS = [999, 950, 900, 850, 800, 750, 700]


def rel(a, ref):
    a, ref = a.double(), ref.double()
    return float((a - ref).norm() / ref.norm())


def cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


# ------------------------------------------------------------------------------------------------
# Wan 2.1: 2 layers, 2 heads, 4x16x32 latents with patch 1x2x2 -> 512 tokens (8 blocks of 64)

def wan(head_dim=64, dtype=torch.float32):
    torch.manual_seed(SEED)
    m = diffusers.WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=head_dim,
                                        in_channels=4, out_channels=4, text_dim=16, freq_dim=32, ffn_dim=64,
                                        num_layers=2, rope_max_seq_len=32)
    return m.eval().to(dtype)


def wan_inputs(dtype=torch.float32, seed=SEED):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 4, 4, 16, 32, generator=g).to(dtype), torch.randn(1, 8, 16, generator=g).to(dtype))


def wan_run(m, inputs, t=999):
    x, e = inputs
    with torch.no_grad():
        return m(x, torch.tensor([t]), e).sample


def cfg(**kw):
    kw.setdefault("min_tokens", 0)
    return bd.Config(**kw)


def test_wan_keep1_matches_sdpa_fp32():
    m, inp = wan(), wan_inputs()
    ref = wan_run(m, inp)
    h = bd.install(m, cfg(keep=1.0))
    out = wan_run(m, inp)
    r = h.report()
    # attn1 of both layers through baatt, attn2 (cross-attention) to SDPA
    assert (r["baatt"], r["fallbacks"], r["replaced"]) == (2, {"cross_attention": 2}, 4)
    # keep=1.0 attends every key: baatt's fp32 attention is within ~1e-6 of float64 (conftest TOL
    # 1e-5), the rest of the model is the same code, so the outputs agree to a few 1e-6.
    assert rel(out, ref) < 2e-5
    h.remove()
    assert torch.equal(wan_run(m, inp), ref)


def test_wan_keep1_matches_sdpa_fp16():
    ref32 = wan_run(wan(), wan_inputs())
    m, inp = wan(dtype=torch.float16), wan_inputs(torch.float16)
    sdpa16 = wan_run(m, inp)
    with bd.install(m, cfg(keep=1.0)) as h:
        out16 = wan_run(m, inp)
        assert h.report()["baatt"] == 2
    # Both fp16 paths round the same way (fp16 inputs, fp32 accumulation); each is measured against
    # the fp32 model: baatt may be a little worse than SDPA, not more than twice (+ slack).
    e_sdpa, e_baatt = rel(sdpa16, ref32), rel(out16, ref32)
    assert e_baatt < 2 * e_sdpa + 1e-3, (e_baatt, e_sdpa)
    assert rel(out16, sdpa16) < 5e-3


@pytest.mark.parametrize("keep", [0.5, 0.25])
def test_wan_sparse_differs_but_close(keep):
    m, inp = wan(), wan_inputs()
    ref = wan_run(m, inp)
    with bd.install(m, cfg(keep=keep)) as h:
        out = wan_run(m, inp)
        assert h.report()["baatt"] == 2
    # dropped key blocks change the output (far above keep=1.0's 1e-6) but not its direction
    assert rel(out, ref) > 1e-3
    assert cosine(out, ref) > 0.99


def test_wan_fallbacks_head_dim_short_dtype():
    m, inp = wan(head_dim=96), wan_inputs()
    ref = wan_run(m, inp)
    with bd.install(m, cfg()) as h:
        out = wan_run(m, inp)
        assert h.report()["fallbacks"] == {"head_dim": 2, "cross_attention": 2} and h.report()["baatt"] == 0
    assert torch.equal(out, ref)   # a fallback before projection is the original processor
    m, inp = wan(), wan_inputs()
    ref = wan_run(m, inp)
    with bd.install(m, bd.Config(min_tokens=513)) as h:   # 512 tokens
        assert torch.equal(wan_run(m, inp), ref)
        assert h.report()["fallbacks"] == {"short_sequence": 2, "cross_attention": 2}
    m, inp = wan(dtype=torch.float64), wan_inputs(torch.float64)
    with bd.install(m, cfg()) as h:
        wan_run(m, inp)
        assert h.report()["fallbacks"] == {"dtype": 2, "cross_attention": 2}


def test_per_token_timestep_counts_steps():
    # Wan's image-to-video passes a timestep per token with the first frame's at 0: the step is the
    # largest entry, so each new t is a new step (not another CFG branch)
    m, (x, e) = wan(), wan_inputs()
    with bd.install(m, cfg(dense_steps=2)) as h, torch.no_grad():
        for t in T_STEPS[:3]:
            m(x, torch.tensor([[0.0] * 128 + [float(t)] * 384]), e)   # 4 frames of 128 tokens
        r = h.report()
    assert (r["step"], r["dense"], r["baatt"]) == (2, 4, 2)


def test_wan_fallback_context_parallel():
    # diffusers' enable_parallelism() sets _parallel_config on the processors: a sharded sequence
    # goes to the original processor, never to baatt
    m, inp = wan(), wan_inputs()
    ref = wan_run(m, inp)
    with bd.install(m, cfg()) as h:
        for p in bd.processors(h):
            p._parallel_config = object()
        out = wan_run(m, inp)
        assert h.report()["fallbacks"] == {"context_parallel": 2, "cross_attention": 2}
    assert torch.equal(out, ref)


def test_wan_fallback_mask():
    m = wan()
    attn = m.blocks[0].attn1
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(1, 512, 128, generator=g)
    mask = torch.rand(1, 1, 512, 512, generator=g) > 0.3
    with torch.no_grad():
        ref = attn(x, None, mask, None)
        with bd.install(m, cfg()) as h:
            out = attn(x, None, mask, None)
            nomask = attn(x, None, None, None)
            r = h.report()
    assert torch.equal(out, ref) and not torch.allclose(nomask, ref)
    assert r["fallbacks"] == {"mask": 1} and r["baatt"] == 1


def test_wan_device_error_falls_back_to_sdpa():
    m, inp = wan(), wan_inputs()
    ref = wan_run(m, inp)
    with bd.install(m, cfg(device=1000)) as h:   # no such Vulkan device: baatt raises NO_DEVICE
        out = wan_run(m, inp)
        r = h.report()
    assert r["fallbacks"] == {"device_error": 2, "cross_attention": 2} and r["baatt"] == 0
    assert rel(out, ref) < 1e-6


def test_wan_dense_steps_and_layers():
    m, inp = wan(), wan_inputs()
    ref = wan_run(m, inp)
    with bd.install(m, cfg(keep=0.25, dense_steps=1, dense_layers={1})) as h:
        step0 = wan_run(m, inp, T_STEPS[0])
        r0 = h.report()
        step1 = wan_run(m, inp, T_STEPS[0])   # same timestep: CFG's second pass of step 0, dense too
        step2 = wan_run(m, inp, T_STEPS[1])
        r = h.report()
    assert (r0["dense"], r0["baatt"]) == (2, 0)
    assert rel(step0, ref) < 1e-6 and torch.equal(step0, step1)   # dense is SDPA: the reference
    assert r["step"] == 1 and r["by_layer"][1].get("baatt", 0) == 0 and r["by_layer"][0]["baatt"] == 1
    assert (r["dense"], r["baatt"]) == (5, 1)
    assert rel(step2, ref) > 1e-3   # layer 0 sparse at step 1 changes the output


def test_wan_reuse_every_r_steps():
    m = wan()
    inputs = [wan_inputs(seed=SEED + i) for i in range(len(T_STEPS))]
    outs = {}
    for store in ("device", "host", "plan"):
        with bd.install(m, cfg(keep=0.5, reuse_every=3, selection_store=store)) as h:
            outs[store] = [wan_run(m, inp, t) for inp, t in zip(inputs, T_STEPS)]
            r = h.report()
            # a new pipe() call (the timestep goes up again) estimates anew at step 0
            again = wan_run(m, inputs[1], T_STEPS[0])
            r2 = h.report()
        # 7 steps, R=3: each of the 2 layers estimates at steps 0, 3, 6 and reuses at 1, 2, 4, 5
        assert (r["estimates"], r["reuse"], r["baatt"]) == (6, 8, 14)
        assert (r2["runs"], r2["step"], r2["estimates"]) == (2, 0, 8)
        assert (r["host_selection_bytes"] > 0) == (store == "host")
        assert r["device_snapshots"] == (2 if store == "device" else 0)   # one a layer, replaced
        assert r["plans"] == (2 if store == "plan" else 1)
    # the host and device stores hand the shared plan back exactly the selection a per-layer plan keeps
    assert all(rel(a, b) < 1e-6 for a, b in zip(outs["host"], outs["plan"]))
    assert all(rel(a, b) < 1e-6 for a, b in zip(outs["device"], outs["plan"]))
    with bd.install(m, cfg(keep=0.5)):
        fresh1 = wan_run(m, inputs[1], T_STEPS[1])
        fresh0 = wan_run(m, inputs[1], T_STEPS[0])
    # a step on a selection estimated on other inputs stays close to a fresh estimate; the new
    # run's step 0 is a fresh estimate
    assert cosine(outs["host"][1], fresh1) > 0.99
    assert rel(again, fresh0) < 1e-6


@pytest.mark.parametrize("store", ["device", "host", "plan"])
def test_wan_reuse_same_inputs_reproduces_estimate(store):
    # attending on the held selection with the inputs it was estimated on is the estimate's
    # attention (no forward hook runs here: both calls are step 0, the second reuses)
    m = wan()
    attn = m.blocks[0].attn1
    x = torch.randn(1, 512, 128, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad(), bd.install(m, cfg(keep=0.5, reuse_every=2, selection_store=store)) as h:
        est, reused = attn(x, None, None, None), attn(x, None, None, None)
        assert (h.report()["estimates"], h.report()["reuse"]) == (1, 1)
        dense = attn.processor.original(attn, x)
    assert rel(reused, est) < 1e-6 and rel(est, dense) > 1e-3


def test_remove_restores_processors():
    m = wan()
    before = {k: v for k, v in m.attn_processors.items()}
    h = bd.install(m, cfg())
    assert all(isinstance(p, bd.WanProcessor) for p in m.attn_processors.values())
    h.remove()
    assert all(m.attn_processors[k] is v for k, v in before.items())
    assert not m._forward_pre_hooks


def test_config_errors():
    for kw, word in (({"keep": 0}, "keep"), ({"block": 48}, "block"), ({"sort": "x"}, "sort"),
                     ({"reuse_every": 0}, "reuse_every"), ({"selection_store": "gpu"}, "selection_store")):
        with pytest.raises(ValueError, match=word):
            bd.Config(**kw)
    with pytest.raises(ValueError, match="no attention processor"):
        bd.install(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------------------------------
# CogVideoX: 2 layers, 2 heads; 16 text tokens + 4 frames x 16x16 latents / patch 2 = 256 video tokens

def cog(head_dim=64, dtype=torch.float32):
    torch.manual_seed(SEED)
    m = diffusers.CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=head_dim, in_channels=4,
                                              out_channels=4, time_embed_dim=32, text_embed_dim=16, num_layers=2,
                                              sample_width=16, sample_height=16, sample_frames=13, patch_size=2,
                                              max_text_seq_length=16, use_rotary_positional_embeddings=True)
    return m.eval().to(dtype)


def cog_inputs(head_dim=64, dtype=torch.float32, seed=SEED):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    g = torch.Generator().manual_seed(seed)
    rope = get_3d_rotary_pos_embed(embed_dim=head_dim, crops_coords=((0, 0), (8, 8)), grid_size=(8, 8),
                                   temporal_size=4, device="cpu")
    return (torch.randn(1, 4, 4, 16, 16, generator=g).to(dtype), torch.randn(1, 16, 16, generator=g).to(dtype), rope)


def cog_run(m, inputs, t=999):
    x, e, rope = inputs
    with torch.no_grad():
        return m(x, e, torch.tensor([t]), image_rotary_emb=rope).sample


def test_cogvideox_keep1_matches_and_sparse_close():
    m, inp = cog(), cog_inputs()
    ref = cog_run(m, inp)
    with bd.install(m, cfg(keep=1.0)) as h:
        out = cog_run(m, inp)
        assert (h.report()["baatt"], h.report()["fallback_total"], h.report()["replaced"]) == (2, 0, 2)
    assert rel(out, ref) < 2e-5   # as for Wan: fp32 attention within ~1e-6
    with bd.install(m, cfg(keep=0.25)) as h:
        sparse = cog_run(m, inp)
    assert rel(sparse, ref) > 1e-3 and cosine(sparse, ref) > 0.99
    assert torch.equal(cog_run(m, inp), ref)   # removed


def test_cogvideox_fallbacks_and_counts():
    m, inp = cog(head_dim=96), cog_inputs(head_dim=96)
    ref = cog_run(m, inp)
    with bd.install(m, cfg()) as h:
        assert torch.equal(cog_run(m, inp), ref) and h.report()["fallbacks"] == {"head_dim": 2}
    m, inp = cog(), cog_inputs()
    ref = cog_run(m, inp)
    with bd.install(m, bd.Config(min_tokens=273)) as h:   # 16 + 256 = 272 tokens
        assert torch.equal(cog_run(m, inp), ref) and h.report()["fallbacks"] == {"short_sequence": 2}
    with bd.install(m, cfg(keep=0.5, dense_steps=1, dense_layers={0}, reuse_every=2)) as h:
        for t in T_STEPS[:4]:
            cog_run(m, inp, t)
        r = h.report()
    # step 0 dense everywhere; layer 0 dense always; layer 1 estimates at steps 1, 3, reuses at 2
    assert (r["dense"], r["estimates"], r["reuse"]) == (5, 2, 1)
    attn = m.transformer_blocks[0].attn1
    g = torch.Generator().manual_seed(SEED)
    hs, enc = torch.randn(1, 256, 128, generator=g), torch.randn(1, 16, 128, generator=g)
    mask = torch.ones(1, 272, dtype=torch.bool)
    with torch.no_grad():
        ref = attn(hs, enc, attention_mask=mask, image_rotary_emb=inp[2])
        with bd.install(m, cfg()) as h:
            out = attn(hs, enc, attention_mask=mask, image_rotary_emb=inp[2])
            assert h.report()["fallbacks"] == {"mask": 1}
    assert all(torch.equal(a, b) for a, b in zip(out, ref))


def test_fused_projections():
    # fuse_qkv_projections(): Wan's attn1 projects through to_qkv, CogVideoX gets the fused processor
    for model, inputs, run in ((wan(), wan_inputs(), wan_run), (cog(), cog_inputs(), cog_run)):
        model.fuse_qkv_projections()
        blocks = getattr(model, "blocks", None) or model.transformer_blocks
        assert blocks[0].attn1.fused_projections and hasattr(blocks[0].attn1, "to_qkv")
        ref = run(model, inputs)
        with bd.install(model, cfg(keep=1.0)) as h:
            out = run(model, inputs)
            assert h.report()["baatt"] == 2 and h.report()["replaced"] == len(model.attn_processors)
        assert rel(out, ref) < 2e-5
