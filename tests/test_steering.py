"""Steering (issue 6) on tiny random models: where the vector lands, that nothing is left behind."""

import pytest
import torch

from core.contrast import ContrastVector, contrast_vector
from core.dictionaries import SAEConfig, create
from core.errors import Cancelled, DistillscopeError
from core.progress import TaskState
from core.steering import (Direction, Steering, generate_stream, generate_tokens, measure_typical_norm,
                           steer, typical_norm)

PROMPT = "the quick brown fox jumps"
LAYER = 1


def _ids(teacher, text=PROMPT):
    return torch.tensor([teacher.tokenize([text], 64)[0]])


def _hidden(teacher, ids):
    with torch.no_grad():
        return teacher.model(input_ids=ids, output_hidden_states=True).hidden_states


def _logits(teacher, ids):
    with torch.no_grad():
        return teacher.model(input_ids=ids).logits


def _hooks(teacher):
    """Every forward hook and pre-hook on the model and its blocks. transformers installs its
    own output recorders on the blocks the first time hidden states are asked for; those stay."""
    return [(name, kind, fn) for name, module in [("model", teacher.model)] + list(enumerate(teacher.layers))
            for kind, hooks in (("post", module._forward_hooks), ("pre", module._forward_pre_hooks))
            for fn in hooks.values()]


def _no_hooks(teacher):
    ours = [h for h in _hooks(teacher) if h[2].__module__ == "core.steering"]
    assert not ours, f"steering hooks left behind: {ours}"
    assert all("output_capturing" in h[2].__qualname__ for h in _hooks(teacher)), _hooks(teacher)


def _direction(teacher, layer=LAYER, seed=0, name="random"):
    g = torch.Generator().manual_seed(seed)
    return Direction.from_vector(name, torch.randn(teacher.d_model, generator=g), f"resid_post.{layer}")


def test_steering_raises_projection_at_layer_and_next_not_bos(tiny_teacher):
    d = _direction(tiny_teacher)
    alpha = 2.0
    ids = _ids(tiny_teacher)
    base = _hidden(tiny_teacher, ids)
    with steer(tiny_teacher, [(d, alpha)]) as s:
        steered = _hidden(tiny_teacher, ids)
    norm = s.norms[f"resid_post.{LAYER}"]
    u = d.unit
    # hidden_states[L + 1] is block L's output
    for layer in range(LAYER + 1):  # blocks before the steered one: untouched
        torch.testing.assert_close(steered[layer], base[layer], rtol=0, atol=0)
    rise = (steered[LAYER + 1] - base[LAYER + 1]) @ u  # [1, T]
    torch.testing.assert_close(rise[0, 1:], torch.full_like(rise[0, 1:], alpha * norm), rtol=1e-4, atol=1e-4)
    nxt = (steered[LAYER + 2] - base[LAYER + 2]) @ u
    assert (nxt[0, 1:] > 0.5 * alpha * norm).all(), nxt  # carried on by the residual connection
    for layer in range(len(base)):  # BOS attends only to itself: never changed, at any depth
        torch.testing.assert_close(steered[layer][0, 0], base[layer][0, 0], rtol=0, atol=0)
    _no_hooks(tiny_teacher)


def test_two_directions_on_two_layers_add_up(tiny_teacher):
    a, b, c = (_direction(tiny_teacher, layer, seed) for layer, seed in ((0, 1), (2, 2), (2, 3)))
    ids = _ids(tiny_teacher)
    base = _hidden(tiny_teacher, ids)
    with Steering(tiny_teacher, [(a, 1.0), (b, 0.5), (c, -0.5)]) as s:
        assert sorted(s.added) == [0, 2]
        steered = _hidden(tiny_teacher, ids)
    assert s.norms.keys() == {"resid_post.0", "resid_post.2"}
    torch.testing.assert_close(((steered[1] - base[1]) @ a.unit)[0, 1:],
                               torch.full((ids.shape[1] - 1,), s.norms["resid_post.0"]), rtol=1e-4, atol=1e-4)
    # at block 2 the difference is the two vectors plus what block 0's vector did on the way
    with Steering(tiny_teacher, [(a, 1.0)]):
        only_a = _hidden(tiny_teacher, ids)
    n2 = s.norms["resid_post.2"]
    torch.testing.assert_close((steered[3] - only_a[3])[0, 1:],
                               (0.5 * n2 * b.unit - 0.5 * n2 * c.unit).expand(ids.shape[1] - 1, -1),
                               rtol=1e-4, atol=1e-4)
    _no_hooks(tiny_teacher)


def test_alpha_zero_leaves_logits_and_generation_identical(tiny_teacher):
    d = _direction(tiny_teacher)
    ids = _ids(tiny_teacher)
    base = _logits(tiny_teacher, ids)
    with steer(tiny_teacher, [(d, 0.0)]):
        zero = _logits(tiny_teacher, ids)
    assert torch.equal(base, zero)
    prompt = tiny_teacher.tokenize([PROMPT], 64)[0]
    assert list(generate_tokens(tiny_teacher, prompt, [(d, 0.0)], 12)) == \
        list(generate_tokens(tiny_teacher, prompt, [], 12))


def test_stream_matches_greedy_generate(tiny_teacher):
    """Unsteered: the KV-cached stream equals transformers' greedy generate, token for token and
    as text. Steered: it equals generate without a cache, where every step reruns the whole
    sequence, so the 1-token cached passes are steered (and only position 0 is left out)."""
    tok = tiny_teacher.tokenizer
    prompt = tiny_teacher.tokenize([PROMPT], 64)[0]
    ids = torch.tensor([prompt])
    n = 14  # past the tiny model's sliding window (16) with the prompt
    ref = tiny_teacher.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                      do_sample=False)[0, len(prompt):].tolist()
    got_ids: list = []
    text = "".join(generate_stream(tiny_teacher, PROMPT, max_new_tokens=n, token_ids=got_ids))
    assert got_ids == ref
    full = tok.decode(prompt + ref, skip_special_tokens=True)
    assert text == full[len(tok.decode(prompt, skip_special_tokens=True)):]

    d = _direction(tiny_teacher, seed=5)
    terms = [(d, 0.7)]
    steered = list(generate_tokens(tiny_teacher, prompt, terms, n))
    assert steered != ref  # the steering does something here
    with steer(tiny_teacher, terms):
        uncached = tiny_teacher.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                               do_sample=False, use_cache=False)[0, len(prompt):].tolist()
    assert steered == uncached
    _no_hooks(tiny_teacher)


def test_sampling_is_seeded(tiny_teacher):
    prompt = tiny_teacher.tokenize([PROMPT], 64)[0]
    runs = [list(generate_tokens(tiny_teacher, prompt, [], 10, temperature=1.0, seed=s)) for s in (3, 3, 4)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_suspended_stream_holds_no_hooks(tiny_teacher):
    d = _direction(tiny_teacher)
    stream = generate_tokens(tiny_teacher, tiny_teacher.tokenize([PROMPT], 64)[0], [(d, 1.0)], 8)
    next(stream)
    _no_hooks(tiny_teacher)  # between tokens, e.g. while the base run takes its turn
    stream.close()
    _no_hooks(tiny_teacher)


def test_cancel_midway_leaves_model_unchanged(tiny_teacher):
    ids = _ids(tiny_teacher)
    before = _logits(tiny_teacher, ids)
    state = TaskState()
    pieces = []
    stream = generate_tokens(tiny_teacher, ids[0].tolist(), [(_direction(tiny_teacher), 3.0)], 20, state=state)
    with pytest.raises(Cancelled):
        for token in stream:
            pieces.append(token)
            if len(pieces) == 3:
                state.cancel()  # as the GUI does when a slider moves
    assert len(pieces) == 3
    _no_hooks(tiny_teacher)
    assert torch.equal(_logits(tiny_teacher, ids), before)


def test_error_inside_forward_or_with_block_removes_hooks(tiny_teacher):
    ids = _ids(tiny_teacher)
    before = _logits(tiny_teacher, ids)
    d = _direction(tiny_teacher)
    calls = []

    def boom(module, args, output):
        calls.append(1)
        if len(calls) == 3:  # on the third token's forward pass
            raise RuntimeError("boom")

    handle = tiny_teacher.layers[-1].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            list(generate_stream(tiny_teacher, PROMPT, [(d, 2.0)], max_new_tokens=10))
    finally:
        handle.remove()
    _no_hooks(tiny_teacher)
    with pytest.raises(ValueError, match="inside"):
        with steer(tiny_teacher, [(d, 2.0)]):
            raise ValueError("inside")
    _no_hooks(tiny_teacher)
    assert torch.equal(_logits(tiny_teacher, ids), before)


def test_centred_norm_by_hand():
    """Three tokens whose first dimension is a large constant (as the real teacher's outlier
    dimensions are): the centred norm ignores it, the plain mean norm is made of it."""
    from core.steering import centred_norm

    h = torch.tensor([[10.0, 1.0], [10.0, -1.0], [10.0, 3.0]])
    # mean [10, 1]; deviations [0, 0], [0, -2], [0, 2]; squared norms 0, 4, 4
    assert centred_norm(h) == pytest.approx((8 / 3) ** 0.5)
    assert centred_norm(h + torch.tensor([1000.0, 0.0])) == pytest.approx((8 / 3) ** 0.5)
    assert float(h.norm(dim=-1).mean()) > 10


def test_typical_norm_is_centred_and_excludes_bos(tmp_path):
    """Hand-computed on a tiny model whose BOS embedding is made 1000x larger (as the real
    teacher's BOS residual dwarfs the rest): sqrt of the mean squared distance from the mean,
    over non-BOS, non-pad tokens only; a constant added to every token changes nothing."""
    from core.models import load_teacher
    from tests.conftest import build_tiny_model

    teacher = load_teacher(build_tiny_model(tmp_path / "bos", n_layers=3, seed=3), device="cpu")
    with torch.no_grad():
        teacher.model.get_input_embeddings().weight[teacher.bos_id] *= 1000
    texts = ["love is kind", "the early bird gets the worm, all that glitters"]  # different lengths: padding
    rows, rows_with_bos = [], []
    for text in texts:  # one text at a time: no padding to think about
        ids = _ids(teacher, text)
        h = _hidden(teacher, ids)[2][0]  # block 1's output, [T, D] (the last entry is after the final norm)
        assert ids[0, 0] == teacher.bos_id
        rows += [h[t] for t in range(1, ids.shape[1])]
        rows_with_bos += [h[t] for t in range(ids.shape[1])]

    def by_hand(vectors):
        n, d = len(vectors), len(vectors[0])
        mean = [sum(float(v[i]) for v in vectors) / n for i in range(d)]
        return (sum(sum((float(v[i]) - mean[i]) ** 2 for i in range(d)) for v in vectors) / n) ** 0.5

    expected = by_hand(rows)
    got = measure_typical_norm(teacher, "resid_post.1", texts)
    assert got == pytest.approx(expected, rel=1e-4)
    assert by_hand(rows_with_bos) > 5 * expected  # what leaving BOS in would have given
    plain = sum(float(v.norm()) for v in rows) / len(rows)
    assert measure_typical_norm(teacher, "resid_post.1", texts, centred=False) == pytest.approx(plain, rel=1e-4)
    assert typical_norm(teacher, "resid_post.1", texts) == pytest.approx(expected, rel=1e-4)

    # A constant outlier dimension (a bias on block 1's output, the same on every token) raises
    # the plain norm but leaves the centred one where it was.
    shift = torch.zeros(teacher.d_model)
    shift[3] = 50 * plain
    handle = teacher.layers[1].register_forward_hook(
        lambda m, a, out: (out[0] + shift,) + tuple(out[1:]) if isinstance(out, tuple) else out + shift)
    try:
        assert measure_typical_norm(teacher, "resid_post.1", texts) == pytest.approx(expected, rel=1e-3)
        assert measure_typical_norm(teacher, "resid_post.1", texts, centred=False) > 40 * plain
    finally:
        handle.remove()

    with torch.no_grad():  # cached per model object: a changed model is only seen after clearing
        teacher.model.get_input_embeddings().weight.mul_(2)
    assert typical_norm(teacher, "resid_post.1", texts) == pytest.approx(expected, rel=1e-4)
    from core.steering import clear_norm_cache
    clear_norm_cache(teacher.model)
    assert typical_norm(teacher, "resid_post.1", texts) != pytest.approx(expected, rel=1e-3)


def test_contrast_direction_maps_back_through_std(tiny_teacher):
    """Ground truth: the classes' raw residuals differ by a planted shift `delta` (1 in every
    dimension) while the dimensions' spreads differ 160-fold. In z-space the contrast leans on
    the dimensions of small spread (v ~ delta / std); times std it is the planted raw shift."""
    g = torch.Generator().manual_seed(0)
    D = tiny_teacher.d_model
    std_true = torch.linspace(0.05, 8.0, D)
    raw = torch.randn(4000, D, generator=g) * std_true + 5.0
    delta = torch.ones(D)
    labels = ["a"] * 2000 + ["b"] * 2000
    raw[:2000] += delta
    mean, std = raw.mean(0), raw.std(0)
    cv = contrast_vector((raw - mean) / std, labels, "a", "b", name="a vs b")
    cv.mean, cv.std, cv.hook = mean, std, f"resid_post.{LAYER}"
    d = Direction.from_contrast(cv)
    assert d.hook.name == f"resid_post.{LAYER}"
    torch.testing.assert_close(d.vector, cv.vector * std)
    cos = torch.nn.functional.cosine_similarity
    mean_diff = raw[:2000].mean(0) - raw[2000:].mean(0)
    assert float(cos(d.unit, mean_diff, dim=0)) == pytest.approx(1.0, abs=1e-5)  # exactly the raw means' difference
    assert float(cos(d.unit, delta, dim=0)) > 0.98  # the planted shift
    assert float(cos(cv.vector, delta, dim=0)) < 0.75  # unmapped, it would point elsewhere
    d.check_fits(tiny_teacher)

    student = ContrastVector("student one", cv.vector, "a", "b", space="student x", hook="resid_post.1")
    with pytest.raises(DistillscopeError, match="cannot be mapped back"):
        Direction.from_contrast(student)
    with pytest.raises(DistillscopeError, match="built at resid_post.1"):
        Direction.from_contrast(cv, hook="resid_post.2")


def test_feature_and_vector_directions_are_checked(tiny_teacher, tmp_path):
    sae = create(SAEConfig(d_in=tiny_teacher.d_model, d_sae=16, k=4, hook_name="resid_post.2"), seed=0)
    d = Direction.from_feature(sae, 5, tiny_teacher)
    assert d.hook.name == "resid_post.2" and torch.equal(d.vector, sae.W_dec[5].detach().float())
    with pytest.raises(DistillscopeError, match="0 to 15"):
        Direction.from_feature(sae, 16, tiny_teacher)
    wide = create(SAEConfig(d_in=tiny_teacher.d_model + 1, d_sae=8, k=2, hook_name="resid_post.2"))
    with pytest.raises(DistillscopeError, match="wide"):
        Direction.from_feature(wide, 0, tiny_teacher)
    deep = create(SAEConfig(d_in=tiny_teacher.d_model, d_sae=8, k=2, hook_name="resid_post.9"))
    with pytest.raises(DistillscopeError, match="no layer 9"):
        Direction.from_feature(deep, 0, tiny_teacher)
    for bad, match in ((torch.zeros(tiny_teacher.d_model), "zero vector"),
                       (torch.full((tiny_teacher.d_model,), float("nan")), "NaN"),
                       (torch.ones(2, 3), "one vector")):
        with pytest.raises(DistillscopeError, match=match):
            Direction.from_vector("bad", bad, "resid_post.1")
    with pytest.raises(DistillscopeError, match="resid_post"):
        Direction.from_vector("mlp", torch.ones(4), "mlp_out.1")
    with pytest.raises(DistillscopeError, match="wide"):
        Steering(tiny_teacher, [(Direction.from_vector("w", torch.ones(5), "resid_post.1"), 1.0)])
    path = d.save(tmp_path / "f5.safetensors")  # round trip with the hook in the metadata
    again = Direction.from_file(path)
    assert again.hook == d.hook and torch.equal(again.vector, d.vector)


def test_cli_direction_syntax_errors_are_clear():
    from core.steering_cli import parse_direction_arg

    assert parse_direction_arg("feature:12=-4") == ("feature:12", -4.0)
    assert parse_direction_arg("a=b.safetensors=0.5") == ("a=b.safetensors", 0.5)
    for bad, match in (("feature:12", "not NAME=ALPHA"), ("=3", "not NAME=ALPHA"),
                       ("feature:12=strong", "'strong'.*not a number"), ("feature:1=nan", "not finite")):
        with pytest.raises(DistillscopeError, match=match):
            parse_direction_arg(bad)


def _save_sae(tiny_teacher, folder):
    sae = create(SAEConfig(d_in=tiny_teacher.d_model, d_sae=16, k=4, hook_name="resid_post.1"), seed=1)
    sae.save(folder)
    return sae


def test_cli_steer_runs_and_reports_bad_names(tiny_teacher, tiny_model_dir, tmp_path, capsys):
    from core.cli import main

    _save_sae(tiny_teacher, tmp_path / "sae")
    vec = Direction.from_vector("v", torch.randn(tiny_teacher.d_model), "resid_post.2").save(tmp_path / "v.safetensors")
    cv = ContrastVector("formal", torch.randn(tiny_teacher.d_model), "formal", "casual",
                        hook="resid_post.1", mean=torch.zeros(tiny_teacher.d_model),
                        std=torch.ones(tiny_teacher.d_model))
    from core.contrast import contrasts_dir
    cv.save(contrasts_dir())
    common = ["steer", "--model", str(tiny_model_dir), "--prompt", PROMPT, "--max-new-tokens", "4",
              "--dictionary", str(tmp_path / "sae")]
    assert main(common + ["--direction", "feature:3=2", "--direction", f"{vec}=-1",
                          "--direction", "contrast:formal=1.5"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"prompt: {PROMPT}"
    assert lines[1].startswith("base: ") and lines[2].startswith("steered [feature:3=2, ")
    assert "typical residual norm at resid_post.1" in err and "tok/s" in err

    for direction, match in (("feature:99=1", "Feature 99 does not exist; the dictionary has features 0 to 15"),
                             ("feature:x=1", "not a whole number"),
                             ("contrast:nope=1", "no saved contrast called 'nope'.*formal"),
                             ("nothing=1", "not a direction name"),
                             ("feature:3", "not NAME=ALPHA")):
        assert main(common + ["--direction", direction]) == 2
        assert _matches(capsys.readouterr().err, match)
    assert main(common + ["--direction", "feature:3=1", "--hook", "resid_post.2"]) == 2
    assert "is at resid_post.1, but --hook says resid_post.2" in capsys.readouterr().err
    wide = tmp_path / "wide.safetensors"
    Direction.from_vector("w", torch.ones(tiny_teacher.d_model + 3), "resid_post.1").save(wide)
    assert main(common + ["--direction", f"{wide}=1"]) == 2
    assert "35 wide" in capsys.readouterr().err
    _no_hooks(tiny_teacher)


def _matches(text, pattern):
    import re
    return re.search(pattern, text, re.S) is not None


# ---------------------------------------------------------------------------------------------
# Direction sources and presets (what the Steering tab saves)


def test_direction_sources_resolve_every_kind(tiny_teacher, tmp_path):
    from core.contrast import contrasts_dir
    from core.crosscoder import Crosscoder, CrosscoderConfig, relative_norms
    from core.steering import direction_from_source

    sae = _save_sae(tiny_teacher, tmp_path / "sae")
    saes: dict = {}
    d = direction_from_source({"kind": "feature", "dictionary": str(tmp_path / "sae"), "index": 3}, tiny_teacher, saes)
    assert torch.equal(d.vector, sae.W_dec[3].detach().float()) and d.hook.name == "resid_post.1"
    assert list(saes) == [str(tmp_path / "sae")]  # kept for the next feature of the same dictionary
    D = tiny_teacher.d_model
    cv = ContrastVector("formal", torch.randn(D), "formal", "casual", hook="resid_post.2",
                        mean=torch.zeros(D), std=torch.rand(D) + 0.5)
    path = cv.save(contrasts_dir())
    d = direction_from_source({"kind": "contrast", "path": str(path), "name": "formality"}, tiny_teacher)
    assert d.name == "formality" and torch.allclose(d.vector, cv.vector * cv.std)
    cc = Crosscoder(CrosscoderConfig(d_in=D, d_latent=16, k=4, hook="resid_post.2"), seed=0)
    cc.save(tmp_path / "cc")
    for decoder, m in ((1, 1), (0, 0), ("variant", 1)):
        d = direction_from_source({"kind": "crosscoder", "folder": str(tmp_path / "cc"), "latent": 7,
                                   "decoder": decoder}, tiny_teacher)
        assert torch.allclose(d.vector, cc.decoder_directions(m)[7]) and d.hook.name == "resid_post.2"
    assert f"relative decoder norm {float(relative_norms(cc)[7]):.2f}" in d.source and "variant" in d.name
    vec = Direction.from_vector("v", torch.randn(D), "resid_post.0").save(tmp_path / "v.safetensors")
    d = direction_from_source({"kind": "file", "path": str(vec)}, tiny_teacher)
    assert d.hook.name == "resid_post.0"

    for source, match in (
            ({"kind": "telepathy"}, "Unknown direction kind 'telepathy'"),
            ({"kind": "feature", "dictionary": str(tmp_path / "sae")}, "needs 'index'"),
            ({"kind": "feature", "dictionary": str(tmp_path / "sae"), "index": True}, "needs 'index'"),
            ({"kind": "crosscoder", "folder": str(tmp_path / "cc"), "latent": 16}, "latents 0 to 15"),
            ({"kind": "crosscoder", "folder": str(tmp_path / "cc"), "latent": 1, "decoder": "chat"}, "no model named 'chat'"),
            ({"kind": "file", "path": str(tmp_path / "gone.safetensors")}, "does not exist"),
            ("feature:3", "must be an object")):
        with pytest.raises(DistillscopeError, match=match):
            direction_from_source(source, tiny_teacher)
    wide = Crosscoder(CrosscoderConfig(d_in=D + 1, d_latent=8, k=2, hook="resid_post.1"), seed=0)
    wide.save(tmp_path / "wide")
    with pytest.raises(DistillscopeError, match="wide"):
        direction_from_source({"kind": "crosscoder", "folder": str(tmp_path / "wide"), "latent": 0}, tiny_teacher)


def test_preset_round_trip_and_bad_files(tmp_path):
    from core.steering import PRESET_FORMAT, PresetDirection, SteeringPreset

    preset = SteeringPreset("Once upon a time", [
        PresetDirection({"kind": "feature", "dictionary": "/d", "index": 12}, 0.3, "#12 food"),
        PresetDirection({"kind": "crosscoder", "folder": "/cc", "latent": 7, "decoder": 1}, -0.25, "", "variant")],
        base="bundled", variant="/runs/x/artifacts/variant", max_new_tokens=30, temperature=0.7, seed=5)
    path = preset.save(tmp_path / "p.json")
    again = SteeringPreset.load(path)
    assert again == preset
    assert json_of(path)["format"] == PRESET_FORMAT

    def bad(content, match):
        p = tmp_path / "bad.json"
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(DistillscopeError, match=match):
            SteeringPreset.load(p)

    import json
    good = preset.to_json()
    bad(b"", "is empty")
    bad(b"\x00\xff\xfe", "not UTF-8")
    bad("{\"format\": ", r"not valid JSON \(line 1")
    bad("3", "not a JSON object")
    bad(json.dumps(dict(good, format="other/1")), "not a steering preset")
    bad(json.dumps(dict(good, prompt=["a"])), "prompt that is not text")
    bad(json.dumps(dict(good, max_new_tokens=10_000)), "max_new_tokens 10000")
    bad(json.dumps(dict(good, temperature=-1)), "temperature -1")
    bad(json.dumps(dict(good, seed=1.5)), "seed 1.5")
    bad(json.dumps(dict(good, directions="feature:3")), "not a list")
    bad(json.dumps(dict(good, directions=[{"alpha": 1}])), "direction 1 without a 'source'")
    bad(json.dumps(dict(good, directions=[{"source": {"kind": "feature"}, "alpha": "nan"}])), "strength is 'nan'")
    bad(json.dumps(dict(good, directions=[{"source": {"kind": "feature"}, "alpha": 1, "apply_to": "all"}])),
        "applies to 'all'")
    bad("{" + " " * 1_000_001 + "}", "too large")
    with pytest.raises(DistillscopeError, match="does not exist"):
        SteeringPreset.load(tmp_path / "none.json")


def json_of(path):
    import json
    return json.loads(path.read_text())


def test_cli_steer_with_a_preset(tiny_teacher, tiny_model_dir, tmp_path, capsys):
    from core.cli import main
    from core.steering import PresetDirection, SteeringPreset, direction_from_source, generate_text

    _save_sae(tiny_teacher, tmp_path / "sae")
    source = {"kind": "feature", "dictionary": str(tmp_path / "sae"), "index": 3}
    preset = SteeringPreset(PROMPT, [PresetDirection(source, 0.8, "#3 test"),
                                     PresetDirection(source, 5.0, "variant only", "variant")],
                            base=str(tiny_model_dir), variant=str(tmp_path / "variant"), max_new_tokens=6)
    path = preset.save(tmp_path / "p.json")
    assert main(["steer", "--preset", str(path)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"prompt: {PROMPT}"
    d = direction_from_source(source, tiny_teacher)
    assert lines[1] == "base: " + generate_text(tiny_teacher, PROMPT, max_new_tokens=6)
    assert lines[2] == "steered [#3 test=0.8]: " + generate_text(tiny_teacher, PROMPT, [(d, 0.8)], max_new_tokens=6)
    assert "variant" in err and "is not run here" in err
    (tmp_path / "broken.json").write_text("{")
    assert main(["steer", "--preset", str(tmp_path / "broken.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["steer", "--model", str(tiny_model_dir), "--direction", "feature:1=1"]) == 2
    assert "no prompt" in capsys.readouterr().err
    assert main(["steer", "--model", str(tiny_model_dir), "--prompt", "x"]) == 2
    assert "no direction" in capsys.readouterr().err
    _no_hooks(tiny_teacher)


def test_crosscoder_latent_steers_each_model_with_its_own_row_in_proportion(tiny_teacher, tmp_path):
    """A variant-only latent (base row 1/20 of the variant's in the crosscoder's normalized
    space, input scales differing) with decoder 'own': each model gets its own row, the variant
    at full strength, the base at 1/20 of it, so the base barely moves; one model's row alone
    keeps gain 1; a row that is exactly zero adds nothing; 'own' without a model is refused."""
    from core.crosscoder import Crosscoder, CrosscoderConfig
    from core.steering import OWN_DECODER, crosscoder_direction, direction_from_source

    D = tiny_teacher.d_model
    cc = Crosscoder(CrosscoderConfig(d_in=D, d_latent=8, k=2, hook=f"resid_post.{LAYER}",
                                     input_scale=[2.0, 0.5]), seed=0)
    g = torch.Generator().manual_seed(3)
    base_row, variant_row = torch.randn(D, generator=g), torch.randn(D, generator=g)
    with torch.no_grad():
        cc.W_dec[5, 0] = 0.05 * base_row / base_row.norm()
        cc.W_dec[5, 1] = variant_row / variant_row.norm()
        cc.W_dec[6, 0] = 0.0
    cc.save(tmp_path / "cc")
    source = {"kind": "crosscoder", "folder": str(tmp_path / "cc"), "latent": 5, "decoder": OWN_DECODER}
    base = direction_from_source(source, tiny_teacher, model="base")
    variant = direction_from_source(source, tiny_teacher, model="variant")
    assert torch.allclose(base.unit, cc.decoder_directions(0)[5] / cc.decoder_directions(0)[5].norm())
    assert torch.allclose(variant.unit, cc.decoder_directions(1)[5] / cc.decoder_directions(1)[5].norm())
    assert base.gain == pytest.approx(0.05, rel=1e-4) and variant.gain == 1.0
    one = direction_from_source(dict(source, decoder=0), tiny_teacher)
    assert one.gain == 1.0 and torch.allclose(one.unit, base.unit)
    with pytest.raises(DistillscopeError, match="say which model"):
        direction_from_source(source, tiny_teacher)
    assert crosscoder_direction(cc, 6, 0, own=True).gain == 0.0  # no base row at all

    ids = _ids(tiny_teacher)
    clean = _hidden(tiny_teacher, ids)[LAYER + 1]
    moved = {}
    for name, d in (("base", base), ("variant", variant)):
        with steer(tiny_teacher, [(d, 0.5)]) as s:
            moved[name] = float(((_hidden(tiny_teacher, ids)[LAYER + 1] - clean)[0, 1:] @ d.unit).mean())
    norm = s.norms[f"resid_post.{LAYER}"]
    assert moved["variant"] == pytest.approx(0.5 * norm, rel=1e-3)
    assert moved["base"] == pytest.approx(0.5 * 0.05 * norm, rel=1e-3)
    with steer(tiny_teacher, [(crosscoder_direction(cc, 6, 0, own=True), 0.5)]):
        torch.testing.assert_close(_hidden(tiny_teacher, ids)[LAYER + 1], clean, rtol=0, atol=0)
    _no_hooks(tiny_teacher)
