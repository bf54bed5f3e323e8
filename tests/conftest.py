"""Shared fixtures: small traces and a one-device cluster factory."""

import numpy as np
import pytest

from simcluster.cluster import InstanceSpec
from simcluster.cost import Layout
from simcluster.hardware import load_device
from simcluster.serving.config import InstanceConfig
from simcluster.models import model_preset
from simcluster.workload import Trace


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
