"""The objects a request names, fetched only if its token may see or change them.

Each guard applies the rules of `control/access.py`: another owner's object is reported
missing, exactly as a name that does not exist (so a tenant cannot probe another's names);
one's own object with too narrow a scope is a 403 that names the scope needed.
"""

from __future__ import annotations

from ember.control import records
from ember.control.access import Principal, acts_for, require, sees
from ember.control.deployments import Target
from ember.control.errors import NotFound
from ember.control.platform import Platform
from ember.control.predictions import PredictionState


async def readable_model(
    platform: Platform, caller: Principal, owner: str, name: str
) -> records.Model:
    """A model the caller owns, or a public one (admins: any)."""
    model = await platform.catalogue.model(owner, name)
    if not sees(caller, model.owner, model.visibility == "public"):
        raise NotFound(f"Model {owner}/{name} not found")
    return model


async def own_model(
    platform: Platform, caller: Principal, owner: str, name: str, action: str
) -> records.Model:
    """A model the caller may change (its owner's, with scope deploy)."""
    if not acts_for(caller, owner, "deploy", action):
        raise NotFound(f"Model {owner}/{name} not found")
    return await platform.catalogue.model(owner, name)


async def readable_deployment(
    platform: Platform, caller: Principal, owner: str, name: str
) -> tuple[records.Deployment, records.Release]:
    if not sees(caller, owner):
        raise NotFound(f"Deployment {owner}/{name} not found")
    return await platform.deployments.get(owner, name)


def own_deployment(caller: Principal, owner: str, name: str, action: str) -> None:
    """Raise unless the caller may change the deployment (NotFound: not its owner's)."""
    if not acts_for(caller, owner, "deploy", action):
        raise NotFound(f"Deployment {owner}/{name} not found")


def deployment_target(platform: Platform, caller: Principal, owner: str, name: str) -> Target:
    """Where a prediction on a deployment runs: the caller's own deployments only."""
    if not sees(caller, owner):
        raise NotFound(f"Deployment {owner}/{name} not found")
    return platform.deployments.for_deployment(owner, name)


async def model_target(platform: Platform, caller: Principal, owner: str, name: str) -> Target:
    """Where a prediction on a model runs: one's own model (its deployment of that name, if
    any), or a public model's latest version. One's own needs no lookup here: the target
    is usually in memory (this is every prediction's path)."""
    own = sees(caller, owner)
    if not own:
        await readable_model(platform, caller, owner, name)
    return await platform.deployments.for_model(owner, name, own=own)


async def version_target(platform: Platform, caller: Principal, reference: str) -> Target:
    """Where a prediction on a version runs, checked before its runner is made: another
    owner's private version is reported missing, as an unknown id is."""
    version_id = reference.rpartition(":")[2]
    known = platform.deployments.known_version(version_id)
    if known is None or not sees(caller, known.model.partition("/")[0]):
        model = await platform.catalogue.version_model(version_id)
        if not sees(caller, model.owner, model.visibility == "public"):
            raise NotFound(f"Version {version_id} not found")
    return await platform.deployments.for_version(reference)


def openai_target(platform: Platform, caller: Principal, model: str, route: str) -> Target:
    """The deployment an OpenAI request names, among the caller's (admins: any)."""
    return platform.deployments.for_openai(model, route, visible_owner(caller), caller.owner)


def visible_owner(caller: Principal) -> str | None:
    """The owner whose objects a listing shows: the caller's, or None (all) for admins."""
    return None if caller.is_admin else caller.owner


async def readable_prediction(
    platform: Platform, caller: Principal, prediction_id: str
) -> PredictionState:
    """A prediction its caller's owner made (admins: any)."""
    state = await platform.book.get(prediction_id)
    if not sees(caller, state.owner):
        raise NotFound(f"Prediction {prediction_id} not found")
    return state


async def readable_file(platform: Platform, caller: Principal, file_id: str) -> records.File:
    record = await platform.files.get(file_id)
    if not sees(caller, record.owner):
        raise NotFound(f"File {file_id} not found")
    return record


def admin(caller: Principal, action: str) -> None:
    """Tokens, prices, budgets, costs and advice: the operator's (403 naming the scope)."""
    require(caller, "admin", action)
