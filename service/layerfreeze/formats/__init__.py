"""Adapters between file formats and the core's Inventory. They parse archives as data, never execute them.

    detect.open_archive(path, limits) -> Archive     entry point: sniff the content, open, validate
    torchzip        torch.save zips and TorchScript archives (zipread: strict central-directory reader)
    legacy          the pre-1.6 non-zip torch.save stream (and plain pickles, which are refused)
    safetensors     header validation and rewrite
    pickle/         machine (symbolic opcodes), calls (allowlisted calls), policy (what may be named),
                    nodes (inert values), reader (bounded window onto a file)
    torch_objects   the model in a pickle tree: state dict, checkpoint dict or whole module
    torchscript     the model in a TorchScript archive, typed by the declarations in its code/
    segments        an output as ranges of its source plus literal bytes (what every writer plans)
    copying         constant-memory writing of segments, with the sha256 digests asked for
    stored          a read model as JSON (inventory and byte sites), to freeze it again without a parse
    statemember     the freeze state inside torch archives (.data/layerfreeze.json)

Nothing here imports torch.
"""
