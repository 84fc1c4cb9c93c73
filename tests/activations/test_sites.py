from __future__ import annotations

import pytest

from heldout.activations.sites import SITE_KINDS, HookSite, parse_sites
from heldout.errors import SiteError


def test_parse_ranges_lists_and_dedup() -> None:
    sites = parse_sites("resid_post:0-2, mlp_out:1, resid_post:1")
    assert [str(s) for s in sites] == ["mlp_out:1", "resid_post:0", "resid_post:1",
                                       "resid_post:2"]
    assert parse_sites("resid_pre:all", n_layers=3) == [HookSite("resid_pre", i) for i in range(3)]
    assert HookSite.parse("attn_out.2") == HookSite("attn_out", 2)
    assert HookSite("resid_mid", 4).key == "resid_mid.4"


@pytest.mark.parametrize("bad", ["resid:1", "resid_post", "resid_post:x", "resid_post:3-1",
                                 "", "resid_post:all"])
def test_bad_specs_raise_site_error(bad: str) -> None:
    with pytest.raises(SiteError) as err:
        parse_sites(bad)
    assert "fix:" in str(err.value)


def test_out_of_range_lists_what_exists() -> None:
    with pytest.raises(SiteError, match=r"has 3 layers \(0-2\)"):
        parse_sites("resid_post:0-5", n_layers=3)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_resolve_against_real_models(arch: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(f"{arch}_model")
    expected = {"resid_pre": "blocks.1.hook_in", "resid_mid": "blocks.1.ln2.hook_in",
                "resid_post": "blocks.1.hook_out", "attn_out": "blocks.1.attn.hook_out",
                "mlp_out": "blocks.1.mlp.hook_out"}
    for kind in SITE_KINDS:
        assert HookSite(kind, 1).resolve(model) == expected[kind]
    with pytest.raises(SiteError, match="out of range"):
        HookSite("resid_post", 3).resolve(model)


def test_resolved_name_is_what_a_hook_sees(gpt2_model) -> None:  # type: ignore[no-untyped-def]
    import torch

    seen: list[str] = []
    name = HookSite("resid_post", 0).resolve(gpt2_model)
    gpt2_model.run_with_hooks(torch.tensor([[2, 9, 10]]),
                              fwd_hooks=[(name, lambda acts, hook: seen.append(hook.name))],
                              stop_at_layer=1)
    assert seen == [name]


def test_a_bare_layer_continues_the_kind_before_it() -> None:
    assert [str(s) for s in parse_sites("resid_post:6,12,17")] == [
        "resid_post:6", "resid_post:12", "resid_post:17"]
    assert parse_sites("resid_post:0-3,8,mlp_out:1,4-5") == sorted(
        [HookSite("resid_post", i) for i in (0, 1, 2, 3, 8)]
        + [HookSite("mlp_out", i) for i in (1, 4, 5)])
    assert parse_sites("attn_out:1, all", n_layers=3) == [HookSite("attn_out", i)
                                                           for i in range(3)]


@pytest.mark.parametrize("bad", ["6,resid_post:1", "resid_post:6,x", "resid_post:1,-",
                                 "resid_post:1,3-"])
def test_a_bare_part_that_is_no_layer_is_refused(bad: str) -> None:
    with pytest.raises(SiteError, match="cannot read") as err:
        parse_sites(bad)
    assert "continues the kind" in str(err.value) or "FIRST-LAST" in str(err.value)
