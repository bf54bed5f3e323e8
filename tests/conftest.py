"""Shared fixtures: small traces and a one-device cluster factory."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck

from simcluster.cluster import InstanceSpec
from simcluster.cost import Layout
from simcluster.hardware import load_device
from simcluster.serving.config import InstanceConfig
from simcluster.models import model_preset
from simcluster.workload import Trace

# Hypothesis settings of the generated-configuration suites (tests/test_invariants.py):
# derandomised, so every run (and CI) draws the same cases and a failure reproduces;
# SIMCLUSTER_HYPOTHESIS=explore draws new cases each run.
SEEDED = dict(derandomize=os.environ.get("SIMCLUSTER_HYPOTHESIS") != "explore", deadline=None,
              database=None, suppress_health_check=[HealthCheck.too_slow,
                                                    HealthCheck.data_too_large])


@pytest.fixture(scope="session")
def h100():
    return load_device("H100-SXM")


@pytest.fixture(scope="session")
def llama7b():
    return model_preset("llama-2-7b")


def make_trace(arrivals, prompts, outputs, name="test"):
    return Trace(np.asarray(arrivals, dtype=float), np.asarray(prompts, dtype=np.int64),
                 np.asarray(outputs, dtype=np.int64), name=name)


def one_instance(device, count=1, **cfg):
    return [InstanceSpec(Layout.uniform(device), InstanceConfig(**cfg), count=count)]


def ship_with_a_resource(cluster, reqs, source):
    """A disaggregated cluster's KV copy as it ran before its link queue (tests compare the
    two): a process step holding the source's link, a SimPy resource per prefill instance,
    for the transfer's time; then the source frees the blocks."""
    import simpy
    links = cluster.__dict__.setdefault("_test_links", {})
    link = links.get(source.id)
    if link is None:
        link = links[source.id] = simpy.Resource(cluster.env, capacity=1)
    nbytes = sum(cluster.model.kv_bytes(r.kv_tokens) for r in reqs)
    with link.request() as slot:
        yield slot
        start = cluster.env.now
        yield cluster.env.timeout(float(cluster.cost_model.calibration.link_time(
            cluster.kv_link, "transfer", nbytes)))
    cluster._shipped(reqs, source, start)
