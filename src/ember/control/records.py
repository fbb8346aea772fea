"""The stored objects the control plane hands out: models, versions, deployments, releases,
files and tokens. The HTTP layer reads them through this module, never from the store,
which only the control plane uses."""

from ember.store.models import Deployment, File, Model, Release, Token, Version

__all__ = ["Deployment", "File", "Model", "Release", "Token", "Version"]
