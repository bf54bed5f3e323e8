"""A tiny experiment for the search, plot and CLI tests: 80 synthetic requests, two H100s."""

TINY = """
name = "tiny"
seed = 3
[trace.synthetic]
n = 80
rate_per_s = 6.0
cv = 1.0
prompt = {dist = "lognormal", median = 300, sigma = 0.8, max_tokens = 3000}
output = {dist = "lognormal", median = 60, sigma = 0.8, max_tokens = 400}
[model]
name = "llama-2-7b"
[[instances]]
device = "H100-SXM"
count = 2
[instances.scheduler]
max_batched_tokens = 4096
[router]
policy = "least_outstanding_tokens"
[slo]
ttft_s = 0.25
tpot_s = 0.03
"""


def write_tiny(directory, text=TINY, name="tiny.toml"):
    path = directory / name
    path.write_text(text)
    return path
