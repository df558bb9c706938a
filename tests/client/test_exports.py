from __future__ import annotations

import layerfreeze_client


def test_all_is_sorted_and_complete() -> None:
    names = layerfreeze_client.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(layerfreeze_client, name) is not None, name
    skip = ("annotations", "cli")
    public = {n for n in vars(layerfreeze_client) if not n.startswith("_") and n not in skip}
    assert public <= set(names), public - set(names)


def test_private_modules_declare_sorted_all() -> None:
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(layerfreeze_client.__path__):
        if mod.name == "__main__":
            continue
        module = importlib.import_module(f"layerfreeze_client.{mod.name}")
        assert module.__all__ == sorted(module.__all__, key=_isort_key), mod.name


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)
