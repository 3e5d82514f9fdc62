import pytest
import torch

from core.errors import ModelLoadError
from core.models import HookPoint, capture, load_teacher
from tests.conftest import build_tiny_model


def _batch(teacher, texts):
    from core.activations import pad_batch
    return pad_batch(teacher.tokenize(texts, 64), teacher.pad_id)


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_resid_post_equals_hidden_states(tmp_path, arch):
    teacher = load_teacher(build_tiny_model(tmp_path / arch, arch=arch), device="cpu")
    ids, mask = _batch(teacher, ["the quick brown fox", "love is kind and patient"])
    with torch.no_grad():
        full = teacher.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    for layer in range(teacher.n_layers - 1):  # the last entry of hidden_states is after the final norm
        hook = HookPoint("resid_post", layer)
        got = capture(teacher, ids, mask, [hook])[hook]
        torch.testing.assert_close(got, full.hidden_states[layer + 1])


def test_capture_stops_after_deepest_layer(tiny_teacher):
    ran = []
    handles = [b.register_forward_hook(lambda m, i, o, n=n: ran.append(n))
               for n, b in enumerate(tiny_teacher.layers)]
    head_calls = []
    handles.append(tiny_teacher.model.lm_head.register_forward_hook(lambda *a: head_calls.append(1)))
    try:
        ids, mask = _batch(tiny_teacher, ["a stitch in time"])
        out = capture(tiny_teacher, ids, mask, [HookPoint("resid_post", 1), HookPoint("mlp_out", 0)])
    finally:
        for h in handles:
            h.remove()
    assert ran == [0, 1]
    assert head_calls == []
    assert out[HookPoint("mlp_out", 0)].shape == (1, ids.shape[1], tiny_teacher.d_model)


def test_mlp_hooks_match_module_io(tiny_teacher):
    ids, mask = _batch(tiny_teacher, ["science is organised knowledge"])
    seen = {}
    mlp = tiny_teacher.layers[2].mlp
    h = mlp.register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o))
    try:
        with torch.no_grad():
            tiny_teacher.model(input_ids=ids, attention_mask=mask)
    finally:
        h.remove()
    got = capture(tiny_teacher, ids, mask, [HookPoint("mlp_in", 2), HookPoint("mlp_out", 2)])
    torch.testing.assert_close(got[HookPoint("mlp_in", 2)], seen["inp"])
    torch.testing.assert_close(got[HookPoint("mlp_out", 2)], seen["out"])


def test_hook_parse_and_bad_layer(tiny_teacher):
    assert HookPoint.parse("resid_post.3") == HookPoint("resid_post", 3)
    for bad in ["resid_post", "resid.x", "attn_out.2"]:
        with pytest.raises(ValueError):
            HookPoint.parse(bad)
    with pytest.raises(ValueError, match="layers 0 to 3"):
        tiny_teacher.check_hook(HookPoint("resid_post", 9))


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_teacher(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_teacher(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x" * 10)
    with pytest.raises(ModelLoadError, match="not a model"):
        load_teacher(tmp_path / "weights.bin")
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="broken"):
        load_teacher(bad)
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text('{"model_type": "no-such-arch"}')
    with pytest.raises(ModelLoadError):
        load_teacher(unknown)
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(ModelLoadError, match="fake.gguf"):
        load_teacher(fake)


def test_truncated_weights_are_reported(tmp_path, tiny_model_dir):
    import shutil
    folder = tmp_path / "trunc"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="trunc"):
        load_teacher(folder)


def test_bfloat16_twin_runs_bf16_blocks_and_leaves_the_teacher_alone(tiny_teacher):
    from core.models import bfloat16_twin, cpu_has_amx

    twin = bfloat16_twin(tiny_teacher, 1)
    if not cpu_has_amx():  # no fast path here: the teacher itself
        assert twin is tiny_teacher
        return
    assert twin.dtype == torch.bfloat16 and twin.model is not tiny_teacher.model
    assert twin.layers[1].mlp.down_proj.weight.dtype == torch.bfloat16
    assert twin.layers[2].mlp.down_proj.weight is tiny_teacher.layers[2].mlp.down_proj.weight  # shared, never run
    assert all(p.dtype == torch.float32 for p in tiny_teacher.model.parameters())
    ids, mask = _batch(tiny_teacher, ["a stitch in time saves nine", "more haste, less speed"])
    hook = HookPoint("resid_post", 1)
    exact = capture(tiny_teacher, ids, mask, [hook])[hook]
    fast = capture(twin, ids, mask, [hook])[hook]
    assert fast.dtype == torch.bfloat16
    rel = ((fast.float() - exact).norm() / exact.norm()).item()
    assert 0 < rel < 0.02
    assert torch.equal(capture(tiny_teacher, ids, mask, [hook])[hook], exact)  # teacher unchanged
