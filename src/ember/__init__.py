"""Ember: self-hosted serverless inference.

What a model author imports: `from ember import Input, Path, Secret, ConcatenateIterator`.
Kept free of heavy imports because it is loaded inside every model environment.
"""

from ember.scope import current_scope, record_metric
from ember.types import AsyncConcatenateIterator, ConcatenateIterator, File, Input, Path, Secret

__version__ = "0.1.0"

__all__ = [
    "AsyncConcatenateIterator",
    "ConcatenateIterator",
    "File",
    "Input",
    "Path",
    "Secret",
    "__version__",
    "current_scope",
    "record_metric",
]
