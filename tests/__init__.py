"""Yun's tests.

No test may reach the Hugging Face hub (this machine has no network, and a test's answer must not
depend on one): the hub library is offline for every test and every `yun serve` the tests start (they
inherit the environment). A fuzzed `POST /admin/models` with a hub source then fails at once, instead of
retrying huggingface.co for longer than the fuzzer's deadline. Set here, before anything imports the
hub library, which reads it once at import.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
