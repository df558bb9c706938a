"""Client helper for the layerfreeze service: upload a checkpoint and a freeze spec, get the report and the
frozen checkpoint back, and apply the freeze state to a live model.

    from layerfreeze_client import Client, Spec, apply

    with Client() as client:                      # $LAYERFREEZE_URL, $LAYERFREEZE_TOKEN
        result = client.freeze("model.pt", Spec().freeze(names=["encoder"]).unfreeze(params=["bias"]))
    apply(model, result.output)

Needs only httpx and tqdm; ``apply`` imports torch when it is called.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._apply import *  # noqa: F403
from ._apply import __all__ as _apply_all
from ._async_client import *  # noqa: F403
from ._async_client import __all__ as _async_all
from ._client import *  # noqa: F403
from ._client import __all__ as _client_all
from ._errors import *  # noqa: F403
from ._errors import __all__ as _errors_all
from ._models import *  # noqa: F403
from ._models import __all__ as _models_all
from ._retry import *  # noqa: F403
from ._retry import __all__ as _retry_all
from ._spec import *  # noqa: F403
from ._spec import __all__ as _spec_all

__all__ = sorted([
    "__version__",
    *_apply_all, *_async_all, *_client_all, *_errors_all, *_models_all, *_retry_all, *_spec_all,
])
