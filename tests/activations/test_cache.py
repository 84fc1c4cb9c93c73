from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heldout.activations.cache import cache_activations
from heldout.activations.sites import HookSite
from heldout.data import Dataset, tokenize_dataset
from heldout.errors import ConfigError, DataError, SiteError, StoreMismatchError

SITES = ["resid_pre:0", "resid_mid:1", "resid_post:1", "attn_out:0", "mlp_out:1"]


def reference(model, dataset: Dataset, sites: list[HookSite], select: str  # type: ignore[no-untyped-def]
              ) -> dict[HookSite, list[np.ndarray]]:
    """Per example, TransformerLens's own run_with_cache on the unpadded sequence."""
    out: dict[HookSite, list[np.ndarray]] = {site: [] for site in sites}
    for ex in tokenize_dataset(dataset, model.tokenizer):
        _, cache = model.run_with_cache(torch.tensor([ex.input_ids]),
                                        names_filter=[s.alias for s in sites])
        for site in sites:
            acts = cache[site.alias][0][torch.tensor(ex.response_mask)]
            out[site].append({"last": acts[-1:], "mean": acts.mean(0, keepdim=True),
                              "tokens": acts}[select].numpy())
    return out


@pytest.mark.parametrize("select", ["last", "mean", "tokens"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_cache_equals_run_with_cache_exactly(arch: str, select: str, chat_dataset: Dataset,
                                             tmp_path: Path, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(f"{arch}_model")
    dataset = Dataset(chat_dataset.examples[:9])
    store = cache_activations(model, dataset, SITES, out=tmp_path / "s", select=select,
                              batch_size=1, shard_rows=4, progress=False)
    assert store.n_rows == len(dataset) and store.ids == dataset.ids
    assert store.labels.tolist() == dataset.labels.tolist()
    expected_by_site = reference(model, dataset, store.sites, select)
    for site in store.sites:
        expected = expected_by_site[site]
        if select == "tokens":
            values, offsets = store.read_tokens(site)
            got = [values[offsets[i]:offsets[i + 1]] for i in range(len(dataset))]
        else:
            got = list(store.read(site)[:, None])
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("select", ["last", "mean", "tokens"])
def test_padded_batches_match_single_examples(select: str, gpt2_model, chat_dataset: Dataset,  # type: ignore[no-untyped-def]
                                              tmp_path: Path) -> None:
    one = cache_activations(gpt2_model, chat_dataset, "resid_post:2", out=tmp_path / "one",
                            select=select, batch_size=1, progress=False)
    many = cache_activations(gpt2_model, chat_dataset, "resid_post:2", out=tmp_path / "many",
                             select=select, batch_size=8, shard_rows=7, progress=False)
    if select == "tokens":
        (a, oa), (b, ob) = one.read_tokens("resid_post:2"), many.read_tokens("resid_post:2")
        np.testing.assert_array_equal(oa, ob)
    else:
        a, b = one.read("resid_post:2"), many.read("resid_post:2")
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_forward_stops_after_deepest_layer(gpt2_model, chat_dataset: Dataset,  # type: ignore[no-untyped-def]
                                           tmp_path: Path) -> None:
    fired: list[str] = []
    handles = [gpt2_model.hook_dict[f"blocks.{i}.hook_resid_post"].add_hook(
        lambda acts, hook: fired.append(hook.name)) for i in range(3)]
    try:
        cache_activations(gpt2_model, chat_dataset, "resid_post:0", out=tmp_path / "s",
                          batch_size=64, progress=False)
    finally:
        gpt2_model.reset_hooks()
    del handles
    assert set(fired) == {"blocks.0.hook_out"}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_storage(dtype: str, gpt2_model, chat_dataset: Dataset,  # type: ignore[no-untyped-def]
                                tmp_path: Path) -> None:
    full = cache_activations(gpt2_model, chat_dataset, "resid_post:1", out=tmp_path / "f",
                             progress=False).read("resid_post:1")
    half = cache_activations(gpt2_model, chat_dataset, "resid_post:1", out=tmp_path / "h",
                             dtype=dtype, progress=False).read("resid_post:1")
    expected = torch.tensor(full).to(getattr(torch, dtype)).float().numpy()
    np.testing.assert_array_equal(half, expected)


def test_bad_input_fails_before_anything_is_written(gpt2_model, chat_dataset: Dataset,  # type: ignore[no-untyped-def]
                                                    tmp_path: Path) -> None:
    out = tmp_path / "s"
    cases = [
        (SiteError, dict(sites="resid_post:7")),
        (SiteError, dict(sites="residual:1")),
        (ConfigError, dict(sites="resid_post:0", select="first")),
        (ConfigError, dict(sites="resid_post:0", dtype="int8")),
        (DataError, dict(sites="resid_post:0", max_length=4)),
    ]
    for error, kwargs in cases:
        with pytest.raises(error):
            cache_activations(gpt2_model, chat_dataset, out=out, progress=False, **kwargs)
        assert not out.exists(), kwargs
    with pytest.raises(DataError, match="no examples"):
        cache_activations(gpt2_model, Dataset(()), "resid_post:0", out=out, progress=False)


def test_truncate_when_asked(gpt2_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ds = Dataset.from_examples([{"prompt": "the " * 100, "response": "yes", "label": 1},
                                {"prompt": "a", "response": "no", "label": 0}])
    store = cache_activations(gpt2_model, ds, "resid_post:0", out=tmp_path / "s",
                              truncate=True, progress=False)
    assert store.manifest["max_length"] == gpt2_model.cfg.n_ctx
    assert store.read("resid_post:0").shape == (2, gpt2_model.cfg.d_model)


def test_other_dataset_or_model_is_refused(gpt2_model, llama_model, chat_dataset: Dataset,  # type: ignore[no-untyped-def]
                                           tmp_path: Path) -> None:
    out = tmp_path / "s"
    cache_activations(gpt2_model, chat_dataset, "resid_post:0", out=out, progress=False)
    before = sorted(p.name for p in out.iterdir())
    changed = Dataset(chat_dataset.examples[:-1])
    with pytest.raises(StoreMismatchError, match="dataset_fingerprint"):
        cache_activations(gpt2_model, changed, "resid_post:0", out=out, progress=False)
    with pytest.raises(StoreMismatchError, match="model_fingerprint"):
        cache_activations(llama_model, chat_dataset, "resid_post:0", out=out, progress=False)
    with pytest.raises(StoreMismatchError, match="sites"):
        cache_activations(gpt2_model, chat_dataset, "resid_post:1", out=out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before
    # the same command again is a no-op resume
    again = cache_activations(gpt2_model, chat_dataset, "resid_post:0", out=out, progress=False)
    assert again.complete


def test_indexed_token_selection(gpt2_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ds = Dataset.from_examples([
        {"messages": [{"role": "user", "content": "is the sun " + "red " * i}],
         "response": "no it is not " + "blue " * i, "label": i % 2} for i in range(6)])
    store = cache_activations(gpt2_model, ds, "resid_post:1", out=tmp_path / "s",
                              select="token:2", batch_size=4, progress=False)
    site = HookSite("resid_post", 1)
    tokens = reference(gpt2_model, ds, [site], "tokens")[site]
    expected = np.stack([t[2] for t in tokens])
    np.testing.assert_allclose(store.read(site), expected, atol=1e-5)
    with pytest.raises(DataError, match="reads response token 4, but 1 example"):
        cache_activations(gpt2_model, ds, "resid_post:1", out=tmp_path / "t",
                          select="token:4", progress=False)
    assert not (tmp_path / "t").exists()
    with pytest.raises(ConfigError, match="token:K"):
        cache_activations(gpt2_model, ds, "resid_post:1", out=tmp_path / "t",
                          select="token:-1", progress=False)


def test_other_tokenizer_is_refused_and_old_stores_still_read(tiny_checkpoints: dict[str, Path],  # type: ignore[no-untyped-def]
                                                              gpt2_model, chat_dataset: Dataset,
                                                              tmp_path: Path) -> None:
    import json

    from heldout.activations.store import ActivationStore
    from heldout.models import load_model
    from heldout.tiny import WORDS, build_word_tokenizer

    out = tmp_path / "s"
    store = cache_activations(gpt2_model, chat_dataset, "resid_post:0", out=out, progress=False)
    # same weights, same vocabulary size, other ids: only the tokenizer differs
    shuffled = build_word_tokenizer(list(reversed(WORDS + [str(i) for i in range(10)])))
    other = load_model(tiny_checkpoints["gpt2"], tokenizer=shuffled, device="cpu")
    with pytest.raises(StoreMismatchError, match="tokenizer_fingerprint"):
        cache_activations(other, chat_dataset, "resid_post:0", out=out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["tokenizer_fingerprint"]  # a store written before the field existed
    (out / "manifest.json").write_text(json.dumps(manifest))
    old = ActivationStore.open(out)
    assert np.array_equal(old.read("resid_post:0"), store.read("resid_post:0"))
