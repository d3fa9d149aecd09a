"""The fake engine the unit tests use has exactly the real Engine's methods, with the same signatures."""

import inspect
import unittest

from claude_bottle.docker import Engine

from .fake_engine import FakeEngine


def public_methods(cls) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_")}


class FakeEngineTest(unittest.TestCase):
    def test_same_methods_and_signatures_as_the_real_engine(self):
        real, fake = public_methods(Engine), public_methods(FakeEngine)
        self.assertEqual(sorted(fake), sorted(real))
        for name, signature in real.items():
            with self.subTest(name):
                self.assertEqual([(p.name, p.default) for p in fake[name].parameters.values()],
                                 [(p.name, p.default) for p in signature.parameters.values()])


if __name__ == "__main__":
    unittest.main()
