"""Runs one of Eclipse Paho's MQTT interoperability suites (interop/client_test.py for
MQTT 3.1.1, interop/client_test5.py for MQTT 5) against a broker, and prints one line per
test ("PASS name" / "FAIL name") and last "<passed> passed, <failed> failed".

Usage: python3 run_suite.py client_test|client_test5 HOST PORT

The suites are run as their own __main__ would run them (same topics, same tests), with
the host and port set directly instead of through their command lines. Only the standard
library is needed.
"""

import importlib
import os
import sys
import types
import unittest

suite, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interop")
sys.path.insert(0, here)
# The `mqtt` package without its __init__, which would import Paho's own test broker (not
# copied here): the suites need only its clients and packet formats.
package = types.ModuleType("mqtt")
package.__path__ = [os.path.join(here, "mqtt")]
sys.modules["mqtt"] = package

module = importlib.import_module(suite)
module.host = host
module.port = port
if suite == "client_test":
    # What client_test.py's __main__ sets (client_test5.py sets them in setUpClass).
    module.topics = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
    module.wildtopics = ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")
    module.nosubscribe_topics = ("test/nosubscribe",)
else:
    # What client_test5.py's __main__ sets (its test of shared subscriptions uses it).
    module.topic_prefix = "client_test5/"


class Outcomes(unittest.TextTestResult):
    """Keeps the name of every test that passed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed = []

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test.id().rsplit(".", 1)[-1])


tests = unittest.TestLoader().loadTestsFromTestCase(module.Test)
runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=Outcomes)
result = runner.run(tests)
failed = sorted(
    test.id().rsplit(".", 1)[-1] for test, _ in result.failures + result.errors
)
for name in sorted(result.passed):
    print("PASS", name)
for name in failed:
    print("FAIL", name)
print(f"{len(result.passed)} passed, {len(failed)} failed", flush=True)
# The suites leave client threads behind; do not wait for them.
os._exit(0)
