from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import heldout
from heldout.activations import Activations, HookSite, collect
from heldout.activations.cache import cache_activations
from heldout.data import Dataset
from heldout.errors import ConfigError, DataError, SiteError

SITES = ["resid_pre:0", "resid_mid:1", "resid_post:1", "attn_out:0", "mlp_out:2"]


@pytest.mark.parametrize("select", ["last", "mean", "token:0", "tokens"])
def test_collect_equals_the_cache_on_disk(select: str, gpt2_model, chat_dataset: Dataset,  # type: ignore[no-untyped-def]
                                          tmp_path: Path) -> None:
    # Different batch sizes on purpose: the rows must not depend on batching.
    store = cache_activations(gpt2_model, chat_dataset, SITES, out=tmp_path / "s",
                              select=select, batch_size=4, shard_rows=5, progress=False)
    acts = collect(gpt2_model, chat_dataset, SITES, select, batch_size=7)
    assert acts.sites == tuple(store.sites) and acts.selection == select
    assert list(acts.ids) == store.ids == chat_dataset.ids and len(acts) == 23
    np.testing.assert_array_equal(acts.labels, np.arange(23) % 2)
    assert acts.d_model == gpt2_model.cfg.d_model
    for site in store.sites:
        if select == "tokens":
            values, offsets = acts.get_tokens(site)
            expected, expected_offsets = store.read_tokens(site)
            np.testing.assert_array_equal(offsets, expected_offsets)
        else:
            values, expected = acts.get(site), store.read(site)
        assert values.dtype == np.float32 and values.shape == expected.shape
        np.testing.assert_allclose(values, expected, atol=1e-5, rtol=1e-5)


def test_indexed_token_is_that_row_of_the_per_token_activations(gpt2_model,  # type: ignore[no-untyped-def]
                                                                chat_dataset: Dataset) -> None:
    ds = Dataset([ex for ex in chat_dataset if len(ex.response.split()) >= 2])
    per_token = collect(gpt2_model, ds, "resid_post:2", "tokens")
    values, offsets = per_token.get_tokens("resid_post:2")
    second = collect(gpt2_model, ds, "resid_post:2", "token:1").get("resid_post:2")
    last = collect(gpt2_model, ds, HookSite("resid_post", 2), "last").get("resid_post.2")
    mean = collect(gpt2_model, ds, ["resid_post:2"], "mean").get(HookSite("resid_post", 2))
    np.testing.assert_allclose(second, values[offsets[:-1] + 1], atol=1e-5)
    np.testing.assert_allclose(last, values[offsets[1:] - 1], atol=1e-5)
    np.testing.assert_allclose(mean, np.stack([values[a:b].mean(0) for a, b in
                                               zip(offsets[:-1], offsets[1:])]), atol=1e-5)


def test_bad_requests_fail_before_any_forward(gpt2_model, chat_dataset: Dataset,  # type: ignore[no-untyped-def]
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import heldout.activations.cache as cache

    def no_forward(*args: object, **kwargs: object) -> None:
        raise AssertionError("a forward pass ran")

    monkeypatch.setattr(cache, "forward_selected", no_forward)
    long = Dataset.from_examples([{"prompt": "the " * 100, "response": "yes", "label": 1}])
    cases = [
        (SiteError, "out of range", dict(sites="resid_post:3")),
        (SiteError, "unknown site kind", dict(sites="residual:1")),
        (ConfigError, "unknown token selection", dict(select="first")),
        (ConfigError, "token:K", dict(select="token:-1")),
        (ConfigError, "batch_size", dict(batch_size=0)),
        (DataError, "reads response token 9", dict(select="token:9")),
        (DataError, "more than the model's context", dict(data=long)),
        (DataError, "no examples", dict(data=Dataset(()))),
    ]
    for error, message, kwargs in cases:
        args = {"data": chat_dataset, "sites": "resid_post:0", **kwargs}
        with pytest.raises(error, match=message):
            collect(gpt2_model, **args)  # type: ignore[arg-type]


def test_wrong_accessor_and_missing_site_are_named(gpt2_model, chat_dataset: Dataset  # type: ignore[no-untyped-def]
                                                   ) -> None:
    pooled = collect(gpt2_model, chat_dataset, "resid_post:0")
    with pytest.raises(ConfigError, match="use get_tokens"):
        collect(gpt2_model, chat_dataset, "resid_post:0", "tokens").get("resid_post:0")
    with pytest.raises(ConfigError, match="use get"):
        pooled.get_tokens("resid_post:0")
    with pytest.raises(SiteError, match=r"no site resid_post:1 .*have: resid_post:0"):
        pooled.get("resid_post:1")


def test_truncate_keeps_the_response(gpt2_model) -> None:  # type: ignore[no-untyped-def]
    long = Dataset.from_examples([{"prompt": "the " * 100, "response": "yes", "label": 1},
                                  {"prompt": "a", "response": "no", "label": 0}])
    acts = collect(gpt2_model, long, "resid_post:0", truncate=True)
    assert acts.get("resid_post:0").shape == (2, gpt2_model.cfg.d_model)


def test_exported_where_users_look() -> None:
    from heldout.activations import collect as module_level
    from heldout.activations.collect import collect as defined

    assert heldout.collect is module_level is defined
    assert Activations.__module__ == "heldout.activations.collect"
