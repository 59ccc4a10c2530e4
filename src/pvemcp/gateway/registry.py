"""What a tool is: a typed input model, a declared risk tier, a toolset, and a handler.

Tools never talk to a backend, check a permission or write audit themselves: they get a
`ToolContext` from the gateway, which does all of that around them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pvemcp.policy.tiers import Tier
from pvemcp.pveapi import generic_floor

if TYPE_CHECKING:
    from pvemcp.gateway.context import ToolContext
    from pvemcp.gateway.plan import ApiCall, Plan
    from pvemcp.gateway.undo import Inverse
    from pvemcp.pveapi import Index

CLUSTER_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _cluster_name(value: str | None) -> str | None:
    # Checked here rather than as a schema pattern: every tool has this field, and the
    # pattern would cost bytes in every tools/list for a rule the error message states.
    if value is not None and not CLUSTER_PATTERN.match(value):
        raise ValueError("is not a cluster name (lower-case letters, digits, - and _)")
    return value


class ToolInput(BaseModel):
    """Base of every tool's arguments: strict types, unknown fields rejected.

    Validators are built on first use, not when the tool module is imported: a loaded
    toolset's tools that policy hides from every caller never pay for theirs."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    advertised_bare: ClassVar[tuple[str, ...]] = ("cluster",)
    """Fields advertised with their type alone (`gateway/schema.py`): many tools share
    them, and the server instructions say once what they mean. Each base class names its
    own; validation stays as strict as the model says."""

    cluster: Annotated[
        str | None,
        AfterValidator(_cluster_name),
        Field(description="Cluster name; omit for the default."),
    ] = None


class WriteInput(ToolInput):
    """Base of every tool that changes something: a dry run, and the two-step confirmation."""

    advertised_bare: ClassVar[tuple[str, ...]] = ("dry_run", "confirm_token")

    dry_run: Annotated[
        bool, Field(description="Return the plan of what would change; change nothing.")
    ] = False
    confirm_token: Annotated[
        str | None,
        Field(
            max_length=512,
            description="Token from a confirmation_required answer, after the user approved.",
        ),
    ] = None
    approval_id: Annotated[
        str | None,
        Field(max_length=64, description="Id from an approval_pending answer, once approved."),
    ] = None


class ToolOutput(BaseModel):
    """Base of every tool's result model (built on first use, as `ToolInput`)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


InputT = TypeVar("InputT", bound=ToolInput)
Example = Mapping[str, Any]
"""A tool's arguments, as a model sends them."""
Reject = tuple[Mapping[str, Any], str]
"""Arguments and the error code the gateway must answer them with before sending a write."""
Handler = Callable[["ToolContext", InputT], Awaitable[ToolOutput]]
Planner = Callable[["ToolContext", InputT], Awaitable["Plan"]]
Endpoint = tuple[str, str]
"""An API method a tool sends: (HTTP method, the index's path template)."""
CallsOf = Callable[[InputT, "Index"], Sequence["ApiCall"]]
"""The API calls a call's arguments name, worked out from the cluster's API index alone."""

GUEST_TYPES = ("qemu", "lxc")


def endpoints(declared: Sequence[str]) -> tuple[Endpoint, ...]:
    """`api=` as declared (`"POST /nodes/{node}/{type}/{vmid}/snapshot"`) as (method,
    template) pairs, `{type}` written once for the qemu and lxc methods, as the tools share
    one declaration for both where PVE's API is symmetric."""
    pairs: list[Endpoint] = []
    for text in declared:
        method, _, template = text.partition(" ")
        if method not in ("GET", "POST", "PUT", "DELETE") or not template.startswith("/"):
            raise ValueError(f"api entry {text!r} is not 'METHOD /path/{{template}}'")
        kinds = GUEST_TYPES if "{type}" in template else ("",)
        pairs += [(method, template.replace("{type}", kind)) for kind in kinds]
    return tuple(dict.fromkeys(pairs))


@dataclass(frozen=True, slots=True)
class ToolSpec(Generic[InputT]):
    """A registered tool. `tier` is declared here and nowhere else."""

    name: str
    title: str
    description: str
    tier: Tier
    toolset: str
    """The name of the `Toolset` the tool belongs to: config and sessions enable toolsets."""
    input_model: type[InputT]
    output_model: type[ToolOutput]
    handler: Handler[InputT] | None
    """None for a write declared with `action`: the gateway's default runner sends the
    calls of its confirmed plan (`gateway/run.py`)."""
    idempotent: bool = False
    planner: Planner[InputT] | None = None
    """Works out the plan (and the target) of a risky call; required above `read`."""
    examples: tuple[Example, ...] = ()
    """Arguments that succeed against the demo simulator, each on a fresh one
    (tests/tools/test_examples.py runs them all through the MCP client)."""
    rejects: tuple[Reject, ...] = ()
    """Arguments the gateway refuses with the given error code before it sends any write:
    the bad inputs a tool promises to catch, checked the same way."""
    inverse: Inverse | None = None
    """What undoes a successful call (`gateway/undo.py`): the gateway records it in the
    audit outcome, and `proxmox_call_undo` applies it. None: the write records no undo."""
    api: tuple[Endpoint, ...] = ()
    """The API methods the tool sends, as (method, template): policy's `api` rules and a
    rule naming the tool apply to them (a deny on the tool also stops the generic API
    call of the same endpoints), and the generic call's tier of an endpoint is never
    below the tier of a tool declaring it. A contract test checks the writes the tool's
    examples send are declared."""
    calls_of: CallsOf[Any] | None = None
    """For the generic API tools only: the calls a call's arguments name. The gateway then
    decides on those endpoints and on their tier (`gateway/invoke.py`), and `tier` is only
    the most cautious one, for the tool's hints and its place in tools/list."""

    @property
    def read_only(self) -> bool:
        return self.tier is Tier.READ

    @property
    def destructive(self) -> bool:
        return self.tier in (Tier.DESTRUCTIVE, Tier.ESCAPE)

    @property
    def tiers(self) -> tuple[Tier, ...]:
        """The tiers a call of the tool can have: its own, or for a generic API tool
        (`calls_of`) every tier from read (GET only) or write upwards."""
        if self.calls_of is None:
            return (self.tier,)
        least = Tier.READ if self.tier is Tier.READ else Tier.WRITE
        return tuple(tier for tier in Tier if tier.rank >= least.rank)


def tool(
    name: str,
    *,
    title: str,
    tier: Tier,
    toolset: str,
    input: type[InputT],
    output: type[ToolOutput],
    idempotent: bool = False,
    planner: Planner[InputT] | None = None,
    examples: Sequence[Example] = (),
    rejects: Sequence[Reject] = (),
    inverse: Inverse | None = None,
    api: Sequence[str] = (),
    calls_of: CallsOf[InputT] | None = None,
) -> Callable[[Handler[InputT]], ToolSpec[InputT]]:
    """Declare a tool; the handler's docstring becomes the description the model reads."""

    def wrap(handler: Handler[InputT]) -> ToolSpec[InputT]:
        description = " ".join((handler.__doc__ or "").split())
        if not description:
            raise ValueError(f"tool {name} needs a docstring: it is the model's description")
        if tier is not Tier.READ and (planner is None or not issubclass(input, WriteInput)):
            raise ValueError(f"tool {name} changes things: it needs a planner and WriteInput")
        return ToolSpec(
            name=name,
            title=title,
            description=description,
            tier=tier,
            toolset=toolset,
            input_model=input,
            output_model=output,
            handler=handler,
            idempotent=idempotent,
            planner=planner,
            examples=tuple(examples),
            rejects=tuple(rejects),
            inverse=inverse,
            api=endpoints(api),
            calls_of=calls_of,
        )

    return wrap


WriteT = TypeVar("WriteT", bound=WriteInput)


def action(
    name: str,
    *,
    title: str,
    description: str,
    tier: Tier,
    toolset: str,
    input: type[WriteT],
    output: type[ToolOutput],
    planner: Planner[WriteT],
    idempotent: bool = False,
    examples: Sequence[Example] = (),
    rejects: Sequence[Reject] = (),
    inverse: Inverse | None = None,
    api: Sequence[str] = (),
    calls_of: CallsOf[WriteT] | None = None,
) -> ToolSpec[WriteT]:
    """Declare a write that needs no handler: its planner puts the exact API calls in the
    plan, and the gateway's default runner sends them, waiting for tasks with progress."""
    if tier is Tier.READ:
        raise ValueError(f"tool {name} only reads: declare it with tool() and a handler")
    return ToolSpec(
        name=name,
        title=title,
        description=" ".join(description.split()),
        tier=tier,
        toolset=toolset,
        input_model=input,
        output_model=output,
        handler=None,
        idempotent=idempotent,
        planner=planner,
        examples=tuple(examples),
        rejects=tuple(rejects),
        inverse=inverse,
        api=endpoints(api),
        calls_of=calls_of,
    )


AnySpec = ToolSpec[Any]


def generic_tier(
    method: str, template: str, params: Mapping[str, Any] | None, typed: Sequence[AnySpec]
) -> Tier:
    """The tier of one request of the generic API tools: the riskier of its floor
    (`pveapi.generic_floor`: GET read, POST/PUT write, DELETE destructive, raised for
    escapes and for parameters that make it a loss) and the least tier of the `typed`
    tools that send the same endpoint, so the generic door is never easier than the
    easiest typed one (a template conversion is destructive through either). The least,
    not the most: a destructive restore that starts the guest afterwards must not make
    every start destructive."""
    least = min((spec.tier for spec in typed), key=lambda tier: tier.rank, default=Tier.READ)
    return Tier.most((Tier(generic_floor(method, template, params)), least))


@dataclass(frozen=True, slots=True)
class Toolset:
    """A group of tools that config (`[tools] toolsets`) and a session enable together.

    `load` imports the modules that declare its tools and returns them: it runs only when
    the toolset is first needed, so start-up does not grow with the catalogue.
    """

    name: str
    description: str
    """One line, for `pvemcp tools`, docs/tools.md and the toolset tool's answer."""
    load: Callable[[], Sequence[AnySpec]]
