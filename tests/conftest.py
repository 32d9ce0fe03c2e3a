import pathlib, pytest

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


def toy_length_reward(completions, **kwargs) -> list[float]:
    """Toy reward in [0, 1): n / (n + 100) for a completion of n characters.

    A plain TRL-style reward callable (not registered in `timer1_lib.rewards.REWARDS`): it gives a random tiny model's
    groups reward variance (such a model never earns tiou/format), so GRPO's advantages are non-zero and weights move.
    Pass it in `reward_funcs` next to names, e.g. `['tiou', 'format', toy_reward]`; its metrics are \
`rewards/toy_length_reward/*`."""
    from timer1_lib.rewards import completion_text
    return [len(t) / (len(t) + 100) for t in map(completion_text, completions)]


@pytest.fixture(scope='session')
def toy_reward():
    "The toy length reward (see `toy_length_reward`), for GRPO tests that need reward variance."
    return toy_length_reward
