import os, pathlib, pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    "GPU tests need CUDA; everything else runs everywhere (CI included)."
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    for it in items:
        if 'gpu' in it.keywords and not has_cuda:
            it.add_marker(pytest.mark.skip(reason='needs a CUDA device'))


@pytest.fixture
def root():
    return ROOT
