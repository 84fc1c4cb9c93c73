"""HookSite: the one place where TransformerLens hook-name strings are built.

A site is a typed ``(kind, layer)`` value, written ``"resid_post:2"`` on the command
line. TransformerLens 4 renamed the hooks (residual after block i fires as
``blocks.{i}.hook_out``) but keeps the legacy names as aliases in ``hook_dict``;
:meth:`HookSite.resolve` looks the alias up on the model itself and returns the
canonical name that a hook function sees, so nothing else guesses at strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from heldout.errors import SiteError

SiteKind = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
SITE_KINDS: tuple[str, ...] = get_args(SiteKind)

# The legacy alias of each kind; TransformerLens 4 maps it to the canonical hook.
_ALIAS = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
}


@dataclass(frozen=True, order=True)
class HookSite:
    """A place in the model whose activations are read: ``kind`` at block ``layer``."""

    kind: str
    """One of ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``, ``mlp_out``."""
    layer: int
    """Block index, 0-based."""

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise SiteError(
                f"unknown site kind {self.kind!r}",
                fix=f"use one of {', '.join(SITE_KINDS)}",
            )
        if not isinstance(self.layer, int) or isinstance(self.layer, bool) or self.layer < 0:
            raise SiteError(f"site layer must be an integer >= 0, got {self.layer!r}",
                            fix="write sites as KIND:LAYER, e.g. resid_post:2")

    def __str__(self) -> str:
        return f"{self.kind}:{self.layer}"

    @property
    def key(self) -> str:
        """A name safe for file and tensor keys: ``resid_post.2``."""
        return f"{self.kind}.{self.layer}"

    @property
    def alias(self) -> str:
        """The legacy TransformerLens hook name (accepted by ``run_with_cache``)."""
        return _ALIAS[self.kind].format(layer=self.layer)

    @classmethod
    def parse(cls, text: str) -> HookSite:
        """Parse ``"resid_post:2"`` (also accepts the key form ``"resid_post.2"``)."""
        kind, sep, layer = text.strip().replace(".", ":").rpartition(":")
        if not sep or not layer.isdigit():
            raise SiteError(f"cannot read site {text!r}",
                            fix="write sites as KIND:LAYER, e.g. resid_post:2")
        return cls(kind, int(layer))

    def check(self, n_layers: int) -> None:
        """Raise SiteError if this site's layer does not exist in an ``n_layers`` model."""
        if self.layer >= n_layers:
            raise SiteError(
                f"site {self} is out of range: the model has {n_layers} layers "
                f"(0-{n_layers - 1})",
                fix=f"pick a layer between 0 and {n_layers - 1}",
            )

    def resolve(self, model: Any) -> str:
        """The canonical hook name of this site on ``model`` (a TransformerBridge)."""
        self.check(int(model.cfg.n_layers))
        hook_dict = model.hook_dict
        if self.alias not in hook_dict:
            have = sorted(k for k in hook_dict if k.startswith(f"blocks.{self.layer}."))
            raise SiteError(
                f"the model has no hook for site {self} (looked for {self.alias}); "
                f"hooks at block {self.layer}: {', '.join(have[:20])}",
                fix="choose another site kind for this architecture",
            )
        return str(hook_dict[self.alias].name)


def parse_sites(spec: str | HookSite | list[str | HookSite], n_layers: int | None = None
                ) -> list[HookSite]:
    """Parse a site list such as ``"resid_post:0-3,mlp_out:1"`` (ranges inclusive).

    A bare layer or range continues the kind before it: ``"resid_post:6,12,17"`` is
    ``resid_post`` at layers 6, 12 and 17; ``"resid_post:0-3,8,mlp_out:1"`` adds
    ``resid_post:8``.

    ``"resid_post:all"`` expands to every layer and needs ``n_layers``. The result is
    sorted and free of duplicates; with ``n_layers`` each site is range-checked.
    """
    items: list[str | HookSite]
    if isinstance(spec, (str, HookSite)):
        items = [spec]
    else:
        items = list(spec)
    sites: set[HookSite] = set()
    for item in items:
        if isinstance(item, HookSite):
            sites.add(item)
            continue
        kind = ""
        for part in filter(None, (p.strip() for p in item.split(","))):
            if ":" in part:
                kind, _, layers = part.rpartition(":")
            elif kind and (part == "all" or part.replace("-", "").isdigit()):
                layers = part  # a bare layer (or range) continues the previous kind
            else:
                raise SiteError(f"cannot read site {part!r} in {item!r}",
                                fix="write sites as KIND:LAYER or KIND:FIRST-LAST; a bare "
                                    "layer continues the kind before it, e.g. "
                                    "resid_post:0-3,8,mlp_out:1")
            if layers == "all":
                if n_layers is None:
                    raise SiteError(f"{part!r} needs the model's layer count",
                                    fix="list the layers explicitly, e.g. resid_post:0-3")
                sites.update(HookSite(kind, i) for i in range(n_layers))
            elif "-" in layers:
                lo, _, hi = layers.partition("-")
                if not (lo.isdigit() and hi.isdigit()) or int(lo) > int(hi):
                    raise SiteError(f"cannot read layer range {layers!r} in {part!r}",
                                    fix="write a range as FIRST-LAST, e.g. resid_post:0-3")
                sites.update(HookSite(kind, i) for i in range(int(lo), int(hi) + 1))
            else:
                sites.add(HookSite.parse(f"{kind}:{layers}"))
    if not sites:
        raise SiteError("no sites were given", fix="pass at least one site, e.g. resid_post:2")
    result = sorted(sites)
    if n_layers is not None:
        for site in result:
            site.check(n_layers)
    return result
